SELECT s.*, x.{version} AS {tombstone}
FROM {dedup} AS s
LEFT JOIN {tombstones} AS x ON x.{key} = s.{key}
