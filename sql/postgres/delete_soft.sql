UPDATE {target} AS t
SET {assignments}
FROM {dedup} AS s
WHERE t.{key} = s.{key}
  AND s.{deleted}
  AND s.{version} >= t.{version}
  AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})
