WHEN MATCHED AND s.{deleted}
    AND s.{version} >= t.{version}
    AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})
    THEN UPDATE SET
    {deleted_at} = s.{version},
    {version} = s.{version},
    {load_id} = {load_id_value}
