-- The deal pipeline by stage and month of the expected close: number of deals and amount.
-- materialized: table
-- tests: not_null(deals), accepted_values(dealstage: 'appointmentscheduled', 'qualifiedtobuy', 'presentationscheduled', 'decisionmakerboughtin', 'contractsent', 'closedwon', 'closedlost')
SELECT
    dealstage,
    date_trunc('month', closedate) AS close_month,
    count(*) AS deals,
    sum(amount) AS amount
FROM deals
GROUP BY dealstage, date_trunc('month', closedate)
