SELECT COUNT(*) AS "deleted"
FROM {target}
WHERE {load_id} = {load_id_value} AND {deleted_at} IS NOT NULL
