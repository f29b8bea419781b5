UPDATE {target}
SET {deleted_at} = {as_of}, {load_id} = {load_id_value}
WHERE {target}.{deleted_at} IS NULL
  AND NOT EXISTS (SELECT 1 FROM {incoming} AS i WHERE i.{key} = {target}.{key})
  AND ({target}.{load_id} IS NULL OR {target}.{load_id} < {load_id_value})
