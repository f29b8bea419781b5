MERGE INTO {target} AS t
USING (
    SELECT *
    FROM {incoming}
    QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {version} DESC, {deleted} DESC) = 1
) AS s
ON t.{key} = s.{key}
{delete_clause}
WHEN MATCHED AND NOT s.{deleted}
    AND s.{version} >= t.{version}{tie_guard}
    AND ({changed})
    THEN UPDATE SET
    {assignments}
WHEN NOT MATCHED AND NOT s.{deleted}
    THEN INSERT ({columns})
    VALUES ({values})
