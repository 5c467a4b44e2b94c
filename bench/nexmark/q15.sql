-- q15: bidding statistics per day: bids, bidders and auctions, in all and
-- per price rank (rank 1: price < 10,000; rank 2: < 1,000,000; rank 3: the rest).
-- Flink's COUNT(...) FILTER (WHERE ...) is written as SUM(CASE ...), and
-- COUNT(DISTINCT x) FILTER (...) as COUNT_DISTINCT(CASE ... THEN x END).
CREATE TABLE nexmark_q15 AS
  SELECT FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'yyyy-MM-dd') AS day,
    COUNT(*) AS total_bids,
    SUM(CASE WHEN price < 10000 THEN 1 ELSE 0 END) AS rank1_bids,
    SUM(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END) AS rank2_bids,
    SUM(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END) AS rank3_bids,
    COUNT_DISTINCT(bidder) AS total_bidders,
    COUNT_DISTINCT(CASE WHEN price < 10000 THEN bidder END) AS rank1_bidders,
    COUNT_DISTINCT(CASE WHEN price >= 10000 AND price < 1000000 THEN bidder END) AS rank2_bidders,
    COUNT_DISTINCT(CASE WHEN price >= 1000000 THEN bidder END) AS rank3_bidders,
    COUNT_DISTINCT(auction) AS total_auctions,
    COUNT_DISTINCT(CASE WHEN price < 10000 THEN auction END) AS rank1_auctions,
    COUNT_DISTINCT(CASE WHEN price >= 10000 AND price < 1000000 THEN auction END) AS rank2_auctions,
    COUNT_DISTINCT(CASE WHEN price >= 1000000 THEN auction END) AS rank3_auctions
  FROM bid
  GROUP BY FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'yyyy-MM-dd') EMIT CHANGES;
