-- The primary key constraint of a table ($1: the table's qualified, quoted name).
SELECT c.conname::text FROM pg_catalog.pg_constraint c WHERE c.conrelid = to_regclass($1) AND c.contype = 'p'
