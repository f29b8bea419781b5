CREATE TEMP TABLE {stage} (
    {column_defs}
) ON COMMIT DROP
