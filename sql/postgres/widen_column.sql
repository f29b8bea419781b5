ALTER TABLE {table} ALTER COLUMN {column} TYPE {type} USING {column}::{type}
