SELECT {columns}
FROM (
    SELECT *,
        row_number() OVER (
            PARTITION BY {key}
            ORDER BY {version} DESC, {deleted} DESC
        ) AS "_syncline_rank"
    FROM {staged}
) AS ranked
WHERE "_syncline_rank" = 1
