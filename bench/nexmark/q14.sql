-- q14: calculation. Converted prices in a range, the time of day of the
-- bid, and how many 'c's its extra holds (Flink's count_char UDF).
CREATE STREAM nexmark_q14 AS
  SELECT auction, bidder, 0.908 * price AS price,
    CASE
      WHEN CAST(FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'HH') AS INT) >= 8
       AND CAST(FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'HH') AS INT) <= 18 THEN 'dayTime'
      WHEN CAST(FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'HH') AS INT) <= 6
        OR CAST(FORMAT_TIMESTAMP(FROM_UNIXTIME(dateTime), 'HH') AS INT) >= 20 THEN 'nightTime'
      ELSE 'otherTime'
    END AS bidTimeType,
    dateTime, extra,
    LEN(extra) - LEN(REPLACE(extra, 'c', '')) AS c_counts
  FROM bid
  WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
  EMIT CHANGES;
