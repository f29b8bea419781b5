DELETE FROM {target} AS t
USING {dedup} AS s
WHERE t.{key} = s.{key}
  AND s.{deleted}
  AND s.{version} >= t.{version}
