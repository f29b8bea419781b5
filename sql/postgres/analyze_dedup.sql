ANALYZE {dedup}
