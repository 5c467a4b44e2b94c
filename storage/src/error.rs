use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed; nothing was acknowledged.
    #[error("could not {action} \"{}\": {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk fail their checksum or framing outside the active tail.
    #[error("corrupt log segment \"{}\" at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The topic does not exist.
    #[error("topic \"{0}\" does not exist")]
    TopicNotFound(String),
    /// The topic exists already.
    #[error("topic \"{0}\" already exists")]
    TopicExists(String),
    /// The partition number is out of range.
    #[error("partition {partition} of topic \"{topic}\" does not exist")]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// A partition stopped taking writes after a failed write or fsync.
    #[error(
        "partition {partition} of topic \"{topic}\" takes no more writes after an I/O failure: {reason}"
    )]
    PartitionFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The failure that stopped it.
        reason: String,
    },
    /// A record or batch is too large to frame.
    #[error("record batch too large: {0} bytes")]
    TooLarge(usize),
    /// The sled database of an earlier version (read once, to move its
    /// state over) failed.
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    /// The state store failed.
    #[error("state store error: {0}")]
    State(#[from] fjall::Error),
    /// Another process holds the data directory.
    #[error("data directory \"{}\" is in use by another Brook process", .0.display())]
    Locked(PathBuf),
    /// A record of the catalog topic cannot be read as a catalog command.
    #[error("catalog record at offset {offset} is damaged: {reason}")]
    CatalogRecord {
        /// Its offset in the catalog topic.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Metadata could not be encoded or decoded.
    #[error("invalid metadata in \"{}\": {reason}", path.display())]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StorageError {
    /// Whether the error is the disk (or quota) being full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } | StorageError::State(fjall::Error::Io(source)) => {
                matches!(source.raw_os_error(), Some(28 | 122))
            }
            StorageError::PartitionFailed { reason, .. } => {
                reason.contains("No space left") || reason.contains("quota exceeded")
            }
            _ => false,
        }
    }
}

/// Result alias of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io {
        action,
        path,
        source,
    }
}
