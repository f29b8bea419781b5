CREATE TABLE IF NOT EXISTS {ledger} (
    "load_id" VARCHAR NOT NULL PRIMARY KEY,
    "stream" VARCHAR NOT NULL,
    "rows" NUMBER(38, 0) NOT NULL,
    "checksum" VARCHAR NOT NULL,
    "inserted" NUMBER(38, 0) NOT NULL,
    "updated" NUMBER(38, 0) NOT NULL,
    "deleted" NUMBER(38, 0) NOT NULL,
    "committed_at" TIMESTAMP_TZ NOT NULL DEFAULT CURRENT_TIMESTAMP()
)
