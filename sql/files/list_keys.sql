SELECT {key} AS "k", {version} AS "v"
FROM (
    SELECT {key}, {version}, {deleted},
        row_number() OVER (
            PARTITION BY {key}
            ORDER BY {version} DESC, {deleted} DESC
        ) AS "_syncline_rank"
    FROM "rows"
) AS ranked
WHERE "_syncline_rank" = 1 AND NOT {deleted}
ORDER BY {key}
