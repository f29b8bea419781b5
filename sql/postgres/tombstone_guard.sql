AND NOT EXISTS (
    SELECT 1 FROM {tombstones} AS x
    WHERE x."table_name" = $2::text
      AND x."key" = s.{key}::text
      AND x."version" >= s.{version}
  )
