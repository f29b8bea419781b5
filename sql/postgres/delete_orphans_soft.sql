UPDATE {target} AS t
SET {deleted_at} = $2::timestamptz, {load_id} = $1::text
WHERE t.{deleted_at} IS NULL
  AND NOT EXISTS (SELECT 1 FROM {dedup} AS s WHERE s.{key} = t.{key})
  AND (t.{load_id} IS NULL OR t.{load_id} < $1::text)
