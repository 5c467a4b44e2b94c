-- q9: winning bids. The highest bid per auction, among the bids placed
-- while the auction was open.
-- Differs from Flink's: Flink returns the winning bid's whole row (a
-- ROW_NUMBER top-1); ksqlDB has no row ranking, so this keeps the
-- auction's columns and the highest price.
CREATE TABLE nexmark_q9 AS
  SELECT A.id AS id, LATEST_BY_OFFSET(A.seller) AS seller, LATEST_BY_OFFSET(A.category) AS category,
         LATEST_BY_OFFSET(A.expires) AS expires, MAX(B.price) AS price
  FROM bid B JOIN auction_t A ON B.auction = A.id
  WHERE B.dateTime >= A.dateTime AND B.dateTime <= A.expires
  GROUP BY A.id EMIT CHANGES;
