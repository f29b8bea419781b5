WHEN MATCHED AND s.{deleted}
    AND s.{version} >= t.{version}
    AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})
    THEN UPDATE SET
    {assignments}
