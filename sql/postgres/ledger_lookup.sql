SELECT 1 FROM {ledger} WHERE load_id = $1::text
