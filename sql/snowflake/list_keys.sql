SELECT TO_VARCHAR({key}) AS "k", TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, {version})) AS "v"
FROM {table}
WHERE {live}{after}
ORDER BY {key}
LIMIT {limit}
