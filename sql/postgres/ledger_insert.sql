INSERT INTO {ledger} (load_id, stream, rows, checksum, inserted, updated, deleted)
VALUES ($1::text, $2::text, $3::bigint, $4::text, $5::bigint, $6::bigint, $7::bigint)
