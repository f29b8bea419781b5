COPY (
    SELECT {key}::text, {version}, FALSE
    FROM {table}
) TO STDOUT (FORMAT binary)
