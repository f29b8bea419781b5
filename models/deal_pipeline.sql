-- Open pipeline per deal stage: number of deals and their total amount.
SELECT
    dealstage,
    count(*) AS deals,
    round(sum(amount), 2) AS amount
FROM deals
GROUP BY dealstage
ORDER BY amount DESC
