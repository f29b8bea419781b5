SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)),
       coalesce(wal_status, 'unknown')
FROM pg_replication_slots
WHERE slot_name = $1
