-- q3: local item suggestion. Auctions in category 10 by sellers in
-- Oregon, Idaho or California (the generator writes states in lower case,
-- as RisingWave's form of the query expects).
-- Differs from Flink's: an auction meets its seller as a table (the
-- person's row when the auction arrives), ksqlDB's stream-table join;
-- Flink joins two unbounded streams, so an auction whose seller arrives
-- later matches too. The generator's sellers mostly precede their auctions.
CREATE STREAM nexmark_q3 AS
  SELECT A.seller AS seller, P.name AS name, P.city AS city, P.state AS state, A.id AS id
  FROM auction A JOIN person_t P ON A.seller = P.id
  WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')
  EMIT CHANGES;
