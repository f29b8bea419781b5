SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)
