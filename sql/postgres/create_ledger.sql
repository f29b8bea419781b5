CREATE TABLE IF NOT EXISTS {ledger} (
    load_id text PRIMARY KEY,
    stream text NOT NULL,
    rows bigint NOT NULL,
    checksum text NOT NULL,
    inserted bigint NOT NULL,
    updated bigint NOT NULL,
    deleted bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
)
