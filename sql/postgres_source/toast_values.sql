SELECT {key}::text, {columns}
FROM {table}
WHERE {key} = ANY($1::text[]::{key_type}[])
