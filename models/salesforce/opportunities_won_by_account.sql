-- Won Salesforce opportunities per account: how many and their total amount.
-- materialized: table
-- key: account_id
-- tests: not_null(company), relationships(account_id -> Account.Id)
SELECT
    o."AccountId" AS account_id,
    a."Name" AS company,
    count(*) AS won,
    sum(o."Amount") AS amount
FROM "Opportunity" o
JOIN "Account" a ON a."Id" = o."AccountId"
WHERE o."IsWon"
GROUP BY o."AccountId", a."Name"
