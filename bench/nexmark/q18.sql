-- q18: the last bid of each bidder on each auction.
-- Differs from Flink's: Flink ranks by dateTime (ROW_NUMBER ... = 1);
-- ksqlDB keeps the latest by offset, the same for bids in time order
-- (the generator's are).
CREATE TABLE nexmark_q18 WITH (KEY_FORMAT='JSON') AS
  SELECT bidder, auction, LATEST_BY_OFFSET(price) AS price, LATEST_BY_OFFSET(channel) AS channel,
    LATEST_BY_OFFSET(url) AS url, LATEST_BY_OFFSET(dateTime) AS dateTime, LATEST_BY_OFFSET(extra) AS extra
  FROM bid GROUP BY bidder, auction EMIT CHANGES;
