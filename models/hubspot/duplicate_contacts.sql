-- Contacts sharing an email address (compared in lower case): candidates for a merge.
-- materialized: table
-- key: email
-- tests: not_null(email), not_null(first_id)
SELECT
    lower(email) AS email,
    count(*) AS contacts,
    min(id) AS first_id,
    max(id) AS last_id
FROM contacts
WHERE email IS NOT NULL AND email <> ''
GROUP BY lower(email)
HAVING count(*) > 1
