WHEN MATCHED AND s.{deleted}
    AND s.{version} >= t.{version}
    THEN DELETE
