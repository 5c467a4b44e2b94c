-- q19: the ten highest bids of each auction.
-- Differs from Flink's: Flink returns the ten bids' rows (ROW_NUMBER <= 10);
-- ksqlDB's TOPK returns their prices, highest first.
CREATE TABLE nexmark_q19 AS
  SELECT auction, TOPK(price, 10) AS top_prices FROM bid GROUP BY auction EMIT CHANGES;
