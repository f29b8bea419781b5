MERGE INTO {tombstones} AS x
USING (
    SELECT {table_name} AS "table_name", TO_VARCHAR(d.{key}) AS "key", d.{version} AS "version"
    FROM (
        SELECT *
        FROM {incoming}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {version} DESC, {deleted} DESC) = 1
    ) AS d
    WHERE d.{deleted}
) AS s
ON x."table_name" = s."table_name" AND x."key" = s."key"
WHEN MATCHED AND s."version" > x."version"
    THEN UPDATE SET "version" = s."version", "load_id" = {load_id_value}
WHEN NOT MATCHED
    THEN INSERT ("table_name", "key", "version", "load_id")
    VALUES (s."table_name", s."key", s."version", {load_id_value})
