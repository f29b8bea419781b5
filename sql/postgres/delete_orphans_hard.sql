DELETE FROM {target} AS t
WHERE NOT EXISTS (SELECT 1 FROM {dedup} AS s WHERE s.{key} = t.{key})
  AND (t.{load_id} IS NULL OR t.{load_id} < $1::text)
