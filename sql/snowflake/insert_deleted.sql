INSERT INTO {target} ({columns})
SELECT {values}
FROM (
    SELECT {incoming_row}, x."version" AS {tombstone}
    FROM {incoming} AS i
    LEFT JOIN {tombstones} AS x
        ON x."table_name" = {table_name} AND x."key" = TO_VARCHAR(i.{key})
    QUALIFY ROW_NUMBER() OVER (PARTITION BY i.{key} ORDER BY i.{version} DESC, i.{deleted} DESC) = 1
) AS s
WHERE s.{deleted}
    AND (s.{tombstone} IS NULL OR s.{version} > s.{tombstone})
    AND NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{key} = s.{key})
