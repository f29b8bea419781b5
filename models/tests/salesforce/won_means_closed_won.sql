-- Singular test: a won opportunity is in the stage "Closed Won" (rows returned are failures).
SELECT "Id", "StageName", "IsWon" FROM "Opportunity" WHERE "IsWon" AND "StageName" <> 'Closed Won'
