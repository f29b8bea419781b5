SELECT max({cursor})::text, floor(extract(epoch FROM max({cursor})) * 1000)::int8
FROM {table}{filter}
