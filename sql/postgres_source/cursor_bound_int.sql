SELECT max({cursor})::text, max({cursor})::int8
FROM {table}{filter}
