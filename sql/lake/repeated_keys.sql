SELECT {key}
FROM {staged}
GROUP BY {key}
HAVING count(*) > 1
LIMIT 1
