-- q2: selection. The bids on every 123rd auction.
CREATE STREAM nexmark_q2 AS
  SELECT auction, price FROM bid WHERE auction % 123 = 0 EMIT CHANGES;
