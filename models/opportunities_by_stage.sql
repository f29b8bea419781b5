-- Salesforce opportunities per stage: count, total amount and won deals.
SELECT
    "StageName" AS stage,
    count(*) AS opportunities,
    round(sum("Amount"), 2) AS amount,
    sum(CASE WHEN "IsWon" THEN 1 ELSE 0 END) AS won
FROM "Opportunity"
GROUP BY "StageName"
ORDER BY opportunities DESC
