-- Whether the de-duplicated load is under a tenth of its table's size: then the merge looks
-- its keys up in the table's key index instead of hashing the whole table (see
-- `prefer_index_joins.sql`).
SELECT pg_relation_size('{dedup_text}') * 10 < pg_relation_size('{target_text}')
