SELECT t.{key}, t.{version}, true AS {deleted}
FROM {target} AS t
WHERE {live}
  AND NOT EXISTS (SELECT 1 FROM {load} AS s WHERE s.{key} = t.{key})
  AND (t.{load_id} IS NULL OR t.{load_id} < {load_id_value})
