SELECT column_name::text,
    -- A constrained numeric as its DDL spells it, so precision and scale are compared too.
    CASE WHEN data_type = 'numeric' AND numeric_precision IS NOT NULL
        THEN format('numeric(%s,%s)', numeric_precision, numeric_scale)
        ELSE data_type
    END::text AS data_type
FROM information_schema.columns
WHERE table_schema = $1::text AND table_name = $2::text
ORDER BY ordinal_position
