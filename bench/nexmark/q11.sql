-- q11: user sessions. Bids per bidder per session (10-second gap).
CREATE TABLE nexmark_q11 AS
  SELECT bidder, COUNT(*) AS bid_count
  FROM bid WINDOW SESSION (10 SECONDS)
  GROUP BY bidder EMIT CHANGES;
