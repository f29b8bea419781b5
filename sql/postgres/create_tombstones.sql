CREATE TABLE IF NOT EXISTS {tombstones} (
    "table_name" text NOT NULL,
    "key" text NOT NULL,
    "version" timestamptz NOT NULL,
    "load_id" text NOT NULL,
    PRIMARY KEY ("table_name", "key")
)
