INSERT INTO {tombstones} AS x ("table_name", "key", "version", "load_id")
SELECT $2::text, s.{key}::text, s.{version}, $1::text
FROM {dedup} AS s
WHERE s.{deleted}
ON CONFLICT ("table_name", "key") DO UPDATE
SET "version" = EXCLUDED."version", "load_id" = EXCLUDED."load_id"
WHERE x."version" < EXCLUDED."version"
