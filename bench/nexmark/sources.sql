-- Nexmark's three event streams, as `brook bench nexmark` writes them: JSON
-- values with the generator's field names, event time in `dateTime`
-- (milliseconds since the epoch). Persons and auctions are keyed by their
-- id (KAFKA BIGINT), bids have no key. `person_t` and `auction_t` read the
-- same topics as tables, for the stream-table joins.
-- `${partitions}` is replaced by the bench's --partitions.
CREATE STREAM person (id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING, dateTime BIGINT, extra STRING)
  WITH (KAFKA_TOPIC='person', VALUE_FORMAT='JSON', PARTITIONS=${partitions}, TIMESTAMP='dateTime');
CREATE STREAM auction (id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT, dateTime BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING)
  WITH (KAFKA_TOPIC='auction', VALUE_FORMAT='JSON', PARTITIONS=${partitions}, TIMESTAMP='dateTime');
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime BIGINT, extra STRING)
  WITH (KAFKA_TOPIC='bid', VALUE_FORMAT='JSON', PARTITIONS=${partitions}, TIMESTAMP='dateTime');
CREATE TABLE person_t (id BIGINT PRIMARY KEY, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING, dateTime BIGINT, extra STRING)
  WITH (KAFKA_TOPIC='person', VALUE_FORMAT='JSON', TIMESTAMP='dateTime');
CREATE TABLE auction_t (id BIGINT PRIMARY KEY, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT, dateTime BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING)
  WITH (KAFKA_TOPIC='auction', VALUE_FORMAT='JSON', TIMESTAMP='dateTime');
