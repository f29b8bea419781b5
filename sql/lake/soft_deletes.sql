SELECT
    count(t.{key}) AS marked,
    count(s.{key}) - count(t.{key}) AS remembered
FROM {source} AS s
LEFT JOIN {target} AS t ON t.{key} = s.{key}
WHERE s.{deleted}
  AND (
    (t.{key} IS NULL{tombstone_guard})
    OR (s.{version} >= t.{version} AND (t.{deleted_at} IS NULL OR s.{version} > t.{version}))
  )
