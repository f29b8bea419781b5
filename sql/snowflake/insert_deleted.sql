INSERT INTO {target} ({columns})
SELECT {values}
FROM (
    SELECT *
    FROM {incoming}
    QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {version} DESC, {deleted} DESC) = 1
) AS s
WHERE s.{deleted}
    AND NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{key} = s.{key})
