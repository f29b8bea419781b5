MERGE INTO {target} AS t
USING (
    SELECT {incoming_row}, x."version" AS {tombstone}
    FROM {incoming} AS i
    LEFT JOIN {tombstones} AS x
        ON x."table_name" = {table_name} AND x."key" = TO_VARCHAR(i.{key})
    QUALIFY ROW_NUMBER() OVER (PARTITION BY i.{key} ORDER BY i.{version} DESC, i.{deleted} DESC) = 1
) AS s
ON t.{key} = s.{key}
{delete_clause}
WHEN MATCHED AND NOT s.{deleted}
    AND s.{version} >= t.{version}{tie_guard}
    AND ({changed})
    THEN UPDATE SET
    {assignments}
WHEN NOT MATCHED AND NOT s.{deleted}
    AND (s.{tombstone} IS NULL OR s.{version} > s.{tombstone})
    THEN INSERT ({columns})
    VALUES ({values})
