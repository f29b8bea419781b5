-- Contacts per lifecycle stage, with how many are customers.
-- materialized: table
-- tests: accepted_values(lifecyclestage: 'subscriber', 'lead', 'customer')
SELECT
    lifecyclestage,
    count(*) AS contacts,
    sum(CASE WHEN is_customer THEN 1 ELSE 0 END) AS customers
FROM contacts
GROUP BY lifecyclestage
