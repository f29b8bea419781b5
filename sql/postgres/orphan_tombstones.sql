INSERT INTO {tombstones} AS x ("table_name", "key", "version", "load_id")
SELECT $2::text, t.{key}::text, t.{version}, $1::text
FROM {target} AS t
WHERE NOT EXISTS (SELECT 1 FROM {dedup} AS s WHERE s.{key} = t.{key})
  AND (t.{load_id} IS NULL OR t.{load_id} < $1::text)
ON CONFLICT ("table_name", "key") DO UPDATE
SET "version" = EXCLUDED."version", "load_id" = EXCLUDED."load_id"
WHERE x."version" < EXCLUDED."version"
