ANALYZE {dedup} ({key}, {version}, {deleted})
