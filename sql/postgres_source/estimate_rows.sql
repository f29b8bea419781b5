-- The planner's row estimate of a table, for progress display: -1 (never analyzed) reads as 0.
SELECT GREATEST(c.reltuples, 0)::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
