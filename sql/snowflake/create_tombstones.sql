CREATE TABLE IF NOT EXISTS {tombstones} (
    "table_name" VARCHAR NOT NULL,
    "key" VARCHAR NOT NULL,
    "version" TIMESTAMP_TZ NOT NULL,
    "load_id" VARCHAR NOT NULL,
    PRIMARY KEY ("table_name", "key")
)
