SELECT
    COUNT(*) AS "row_count",
    TO_VARCHAR(COALESCE(SUM(CAST("high" AS NUMBER(38, 0))), 0)) AS "sum_high",
    TO_VARCHAR(COALESCE(SUM(CAST("low" AS NUMBER(38, 0))), 0)) AS "sum_low"
FROM (
    SELECT
        (POSITION(SUBSTR("h", 1, 1) IN '0123456789abcdef') - 1) * 268435456
        + (POSITION(SUBSTR("h", 2, 1) IN '0123456789abcdef') - 1) * 16777216
        + (POSITION(SUBSTR("h", 3, 1) IN '0123456789abcdef') - 1) * 1048576
        + (POSITION(SUBSTR("h", 4, 1) IN '0123456789abcdef') - 1) * 65536
        + (POSITION(SUBSTR("h", 5, 1) IN '0123456789abcdef') - 1) * 4096
        + (POSITION(SUBSTR("h", 6, 1) IN '0123456789abcdef') - 1) * 256
        + (POSITION(SUBSTR("h", 7, 1) IN '0123456789abcdef') - 1) * 16
        + (POSITION(SUBSTR("h", 8, 1) IN '0123456789abcdef') - 1) AS "high",
        (POSITION(SUBSTR("h", 9, 1) IN '0123456789abcdef') - 1) * 268435456
        + (POSITION(SUBSTR("h", 10, 1) IN '0123456789abcdef') - 1) * 16777216
        + (POSITION(SUBSTR("h", 11, 1) IN '0123456789abcdef') - 1) * 1048576
        + (POSITION(SUBSTR("h", 12, 1) IN '0123456789abcdef') - 1) * 65536
        + (POSITION(SUBSTR("h", 13, 1) IN '0123456789abcdef') - 1) * 4096
        + (POSITION(SUBSTR("h", 14, 1) IN '0123456789abcdef') - 1) * 256
        + (POSITION(SUBSTR("h", 15, 1) IN '0123456789abcdef') - 1) * 16
        + (POSITION(SUBSTR("h", 16, 1) IN '0123456789abcdef') - 1) AS "low"
    FROM (
        SELECT MD5(
            TO_VARCHAR({key})
            || '|' || TO_VARCHAR(DATE_PART(EPOCH_MILLISECOND, {version}))
            || '|' || {deleted_flag}
        ) AS "h"
        FROM {source}
        WHERE {live}
    )
)
