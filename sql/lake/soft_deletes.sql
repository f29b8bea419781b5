SELECT count(*) AS deletes
FROM {source} AS s
JOIN {target} AS t ON t.{key} = s.{key}
WHERE s.{deleted}
  AND s.{version} >= t.{version}
  AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})
