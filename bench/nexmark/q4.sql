-- q4: average price per category of the winning bids (the highest bid
-- placed while the auction was open).
-- Differs from Flink's: bids meet their auction as a table (stream-table
-- join, the auction's row when the bid arrives); Flink joins two streams.
CREATE TABLE nexmark_q4_winning WITH (KEY_FORMAT='JSON') AS
  SELECT A.id AS id, A.category AS category, MAX(B.price) AS final
  FROM bid B JOIN auction_t A ON B.auction = A.id
  WHERE B.dateTime >= A.dateTime AND B.dateTime <= A.expires
  GROUP BY A.id, A.category EMIT CHANGES;
CREATE TABLE nexmark_q4 AS
  SELECT category, AVG(final) AS avg_final FROM nexmark_q4_winning GROUP BY category EMIT CHANGES;
