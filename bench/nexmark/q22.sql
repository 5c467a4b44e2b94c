-- q22: get URL directories. The url's first three path parts
-- (ksqlDB's arrays count from 1: Flink's SPLIT_INDEX(url, '/', 3) is [4]).
CREATE STREAM nexmark_q22 AS
  SELECT auction, bidder, price, channel,
    SPLIT(url, '/')[4] AS dir1, SPLIT(url, '/')[5] AS dir2, SPLIT(url, '/')[6] AS dir3
  FROM bid EMIT CHANGES;
