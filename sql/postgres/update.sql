UPDATE {target} AS t
SET {assignments}
FROM {dedup} AS s
WHERE t.{key} = s.{key}
  AND NOT s.{deleted}
  AND s.{version} >= t.{version}{tie_guard}
  AND ({target_row}) IS DISTINCT FROM ({staged_row})
