UPDATE {target} AS t
SET {deleted_at} = s.{version},
    {version} = s.{version},
    {load_id} = $1::text
FROM {dedup} AS s
WHERE t.{key} = s.{key}
  AND s.{deleted}
  AND s.{version} >= t.{version}
  AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})
