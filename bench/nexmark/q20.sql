-- q20: expand bid with auction. Bids on category-10 auctions, with the
-- auction's columns.
-- Differs from Flink's: a bid meets its auction as a table (stream-table
-- join); Flink joins two streams.
CREATE STREAM nexmark_q20 AS
  SELECT B.auction AS auction, B.bidder AS bidder, B.price AS price, B.channel AS channel, B.url AS url,
    B.dateTime AS dateTime, A.itemName AS itemName, A.description AS description,
    A.initialBid AS initialBid, A.reserve AS reserve, A.dateTime AS auctionDateTime,
    A.expires AS expires, A.seller AS seller, A.category AS category
  FROM bid B JOIN auction_t A ON B.auction = A.id
  WHERE A.category = 10 EMIT CHANGES;
