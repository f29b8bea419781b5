INSERT INTO {target} ({columns}, {load_id})
SELECT {staged_columns}, $1::text
FROM {dedup} AS s
WHERE NOT s.{deleted}
  AND NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{key} = s.{key})
