-- Salesforce contacts with their company (account): name, industry and country.
-- materialized: table
-- key: contact_id
-- tests: not_null(last_name), relationships(account_id -> Account.Id)
SELECT
    c."Id" AS contact_id,
    c."FirstName" AS first_name,
    c."LastName" AS last_name,
    c."Email" AS email,
    a."Id" AS account_id,
    a."Name" AS company,
    a."Industry" AS industry,
    a."BillingCountry" AS country
FROM "Contact" c
LEFT JOIN "Account" a ON a."Id" = c."AccountId"
