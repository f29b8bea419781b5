SELECT NOT EXISTS (SELECT 1 FROM {target})
   AND NOT EXISTS (
       SELECT 1 FROM {tombstones} AS x WHERE x."table_name" = $1::text
   )
   AND EXISTS (
       SELECT 1
       FROM pg_catalog.pg_index AS i
       JOIN pg_catalog.pg_attribute AS a
         ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
       WHERE i.indrelid = $2::text::regclass
         AND i.indisunique
         AND i.indimmediate
         AND i.indpred IS NULL
         AND i.indnkeyatts = 1
         AND a.attname = $3::text
   ) AS eligible
