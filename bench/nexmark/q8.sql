-- q8: monitor new users. Persons who opened an auction within 10 seconds
-- of registering.
-- Differs from Flink's: Flink matches persons and sellers in the same
-- aligned 10-second tumbling window; ksqlDB's stream-stream join matches
-- within a 10-second band either side (WITHIN 10 SECONDS).
CREATE STREAM nexmark_q8 AS
  SELECT P.id AS id, P.name AS name, A.id AS auction_id
  FROM person P JOIN auction A WITHIN 10 SECONDS ON P.id = A.seller
  EMIT CHANGES;
