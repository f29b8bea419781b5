INSERT INTO {target} ({columns})
SELECT {values}
FROM {dedup} AS s
WHERE NOT s.{deleted}
  AND NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{key} = s.{key}){tombstone_guard}
