CREATE TEMP TABLE {dedup} ON COMMIT DROP AS
SELECT DISTINCT ON ({key}) *
FROM {stage}
ORDER BY {key}, {version} DESC, {deleted} DESC
