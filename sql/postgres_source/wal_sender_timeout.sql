SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'
