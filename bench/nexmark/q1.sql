-- q1: currency conversion, dollars to euros (0.908 * price). As in Flink,
-- the literal is exact: the product is a DECIMAL.
CREATE STREAM nexmark_q1 AS
  SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid EMIT CHANGES;
