-- Salesforce opportunities per stage: count, total amount and won deals.
-- materialized: table
-- key: stage
-- tests: not_null(stage)
SELECT
    "StageName" AS stage,
    count(*) AS opportunities,
    sum("Amount") AS amount,
    sum(CASE WHEN "IsWon" THEN 1 ELSE 0 END) AS won
FROM "Opportunity"
GROUP BY "StageName"
