MERGE INTO {tombstones} AS x
USING (
    SELECT {table_name} AS "table_name", TO_VARCHAR(t.{key}) AS "key", t.{version} AS "version"
    FROM {target} AS t
    WHERE NOT EXISTS (SELECT 1 FROM {incoming} AS i WHERE i.{key} = t.{key})
      AND (t.{load_id} IS NULL OR t.{load_id} < {load_id_value})
) AS s
ON x."table_name" = s."table_name" AND x."key" = s."key"
WHEN MATCHED AND s."version" > x."version"
    THEN UPDATE SET "version" = s."version", "load_id" = {load_id_value}
WHEN NOT MATCHED
    THEN INSERT ("table_name", "key", "version", "load_id")
    VALUES (s."table_name", s."key", s."version", {load_id_value})
