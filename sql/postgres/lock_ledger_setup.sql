SELECT pg_advisory_xact_lock(hashtext('syncline.ledger.' || $1::text))
