//! Which topics statements may use. Brook's internal topics (the catalog,
//! and every `_brook_…` topic to come) belong to Brook alone: no statement
//! may declare a source over one, write to it, print it or delete it. The
//! processing log's topic is read-only: it may be declared and read, never
//! written by a statement nor deleted. Every front end goes through
//! [`check`], so a later one (the Kafka protocol) keeps the same rules.

use brook_executor::processing_log;
use brook_storage::is_internal_topic;

use crate::error::{Result, ServerError};

/// What a statement does with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicUse {
    /// Declares a source over it (`CREATE STREAM/TABLE … WITH (KAFKA_TOPIC=…)`).
    Declare,
    /// Reads its records directly (`PRINT`).
    Read,
    /// Writes records to it (`INSERT`, a persistent query's sink).
    Write,
    /// Deletes it (`DROP … DELETE TOPIC`).
    Delete,
}

impl TopicUse {
    fn verb(self) -> &'static str {
        match self {
            TopicUse::Declare => "declare a source over",
            TopicUse::Read => "read",
            TopicUse::Write => "write to",
            TopicUse::Delete => "delete",
        }
    }
}

/// Refuses a use of `topic` that is not the user's to make.
pub fn check(topic: &str, what: TopicUse) -> Result<()> {
    if is_internal_topic(topic) {
        return Err(ServerError::Forbidden(format!(
            "cannot {} topic \"{topic}\": topics whose name starts with \"{}\" are internal to Brook",
            what.verb(),
            brook_storage::INTERNAL_TOPIC_PREFIX
        )));
    }
    if topic == processing_log::TOPIC && matches!(what, TopicUse::Write | TopicUse::Delete) {
        return Err(ServerError::Forbidden(format!(
            "cannot {} topic \"{topic}\": the processing log is read-only",
            what.verb()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_are_refused_for_every_use_and_the_processing_log_is_read_only() {
        for what in [
            TopicUse::Declare,
            TopicUse::Read,
            TopicUse::Write,
            TopicUse::Delete,
        ] {
            let e = check("_brook_catalog", what).unwrap_err();
            assert_eq!(e.sqlstate(), "42501");
            assert!(check("_BROOK_anything", what).is_err());
            assert!(check("pageviews", what).is_ok());
        }
        assert!(check(processing_log::TOPIC, TopicUse::Declare).is_ok());
        assert!(check(processing_log::TOPIC, TopicUse::Read).is_ok());
        assert_eq!(
            check(processing_log::TOPIC, TopicUse::Write)
                .unwrap_err()
                .to_string(),
            "cannot write to topic \"default_ksql_processing_log\": the processing log is read-only"
        );
        assert!(check(processing_log::TOPIC, TopicUse::Delete).is_err());
    }
}
