SELECT 1 AS "committed" FROM {ledger} WHERE "load_id" = {load_id}
