-- Not a Nexmark query: bids per auction, the grouped count the hand-written
-- baseline computes too (`brook bench nexmark` prints Brook's ratio to it).
CREATE TABLE nexmark_count AS
  SELECT auction, COUNT(*) AS bids FROM bid GROUP BY auction EMIT CHANGES;
