-- q5: hot items. Bids per auction in hopping windows of 10 seconds that
-- advance by 2.
-- Differs from Flink's: Flink then keeps, per window, only the auctions
-- with the most bids (a join of the counts with their per-window maximum);
-- ksqlDB cannot aggregate a windowed table again, so this is q5's core.
CREATE TABLE nexmark_q5 AS
  SELECT auction, COUNT(*) AS num
  FROM bid WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS)
  GROUP BY auction EMIT CHANGES;
