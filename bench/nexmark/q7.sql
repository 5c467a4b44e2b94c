-- q7: highest bid. The highest price bid in each 10-second tumbling window.
-- Differs from Flink's: Flink joins the maximum back to the bids to return
-- the winning bids' rows; ksqlDB cannot join a stream to a windowed table,
-- so this returns each window's maximum price (grouped by a constant).
CREATE TABLE nexmark_q7 AS
  SELECT 1 AS k, MAX(price) AS maxprice
  FROM bid WINDOW TUMBLING (SIZE 10 SECONDS)
  GROUP BY 1 EMIT CHANGES;
