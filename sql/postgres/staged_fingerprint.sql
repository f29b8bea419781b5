COPY (
    SELECT {key}::text, {version}, {deleted}
    FROM {stage}
) TO STDOUT (FORMAT binary)
