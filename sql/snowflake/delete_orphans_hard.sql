DELETE FROM {target}
WHERE NOT EXISTS (SELECT 1 FROM {incoming} AS i WHERE i.{key} = {target}.{key})
  AND ({target}.{load_id} IS NULL OR {target}.{load_id} < {load_id_value})
