-- q0: pass-through. Every bid, five of its columns.
CREATE STREAM nexmark_q0 AS
  SELECT auction, bidder, price, dateTime, extra FROM bid EMIT CHANGES;
