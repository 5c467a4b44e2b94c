-- q21: add channel id. Known channels by name, others from the url's
-- channel_id parameter (REGEXP_EXTRACT takes the pattern first in ksqlDB).
CREATE STREAM nexmark_q21 AS
  SELECT auction, bidder, price, channel,
    CASE
      WHEN LCASE(channel) = 'apple' THEN '0'
      WHEN LCASE(channel) = 'google' THEN '1'
      WHEN LCASE(channel) = 'facebook' THEN '2'
      WHEN LCASE(channel) = 'baidu' THEN '3'
      ELSE REGEXP_EXTRACT('(&|^)channel_id=([^&]*)', url, 2)
    END AS channel_id
  FROM bid
  WHERE REGEXP_EXTRACT('(&|^)channel_id=([^&]*)', url, 2) IS NOT NULL
     OR LCASE(channel) IN ('apple', 'google', 'facebook', 'baidu')
  EMIT CHANGES;
