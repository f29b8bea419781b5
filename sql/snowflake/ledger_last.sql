SELECT "load_id", "stream", "rows", "checksum", "committed_at"
FROM {ledger}
WHERE "stream" = {stream}
ORDER BY "committed_at" DESC, "load_id" DESC
LIMIT 1
