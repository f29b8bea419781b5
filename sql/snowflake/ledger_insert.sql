INSERT INTO {ledger} ("load_id", "stream", "rows", "checksum", "inserted", "updated", "deleted")
VALUES ({load_id}, {stream}, {rows}, {checksum}, {inserted}, {updated}, {deleted})
