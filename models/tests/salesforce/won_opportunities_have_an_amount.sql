-- Singular test: won opportunities without an amount (rows returned are failures).
SELECT "Id", "StageName" FROM "Opportunity" WHERE "IsWon" AND "Amount" IS NULL
