//! The pgwire front door: every connection passes through here before the
//! protocol handler sees a byte. It bounds what a client can make Brook
//! buffer and hold:
//!
//! - a connection past `max_connections` gets Postgres's "sorry, too many
//!   clients already" (SQLSTATE 53300) and is closed;
//! - each message's length is read from its header and checked before its
//!   body is read: a message over the limit (a Query announcing 1 GiB) is
//!   answered with SQLSTATE 54000 and the connection closed, with nothing
//!   of the body buffered;
//! - SSL and GSS encryption requests are declined ('N'), as a server
//!   without TLS does, so `sslmode=prefer` clients go on in the clear.
//!
//! Messages that pass are streamed to pgwire's handler over a socket pair.

use std::sync::Arc;

use bytes::BytesMut;
use pgwire::error::ErrorInfo;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Startup-phase request codes (the second int of a length-first packet).
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// Startup packets are small: parameters and names only.
const MAX_STARTUP_BYTES: u32 = 10_000;

/// Connection slots of one pgwire listener.
pub struct Door {
    slots: Arc<Semaphore>,
    max_message_bytes: u32,
}

impl Door {
    /// A door for `max_connections` clients sending messages of at most
    /// `max_message_bytes`.
    pub fn new(max_connections: usize, max_message_bytes: usize) -> Door {
        Door {
            slots: Arc::new(Semaphore::new(max_connections)),
            max_message_bytes: u32::try_from(max_message_bytes).unwrap_or(u32::MAX),
        }
    }

    /// A slot for a new connection, or `None` when all are taken.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Refuses a connection for want of a slot, as Postgres does.
    pub async fn refuse(mut client: TcpStream) {
        let info = ErrorInfo::new(
            "FATAL".into(),
            "53300".into(),
            "sorry, too many clients already".into(),
        );
        let _ = client.write_all(&encode(info)).await;
        let _ = client.shutdown().await;
    }

    /// Relays `client` to `handler` (the other end of which pgwire serves)
    /// until either side ends or the client breaks a limit. The slot is
    /// free again before the client sees its connection close.
    pub async fn relay(&self, client: TcpStream, handler: UnixStream, slot: OwnedSemaphorePermit) {
        let (client_read, client_write) = client.into_split();
        let (handler_read, handler_write) = handler.into_split();
        let client_write = Arc::new(Mutex::new(client_write));
        let to_client = pump(handler_read, Arc::clone(&client_write));
        let to_handler = filter(
            client_read,
            handler_write,
            Arc::clone(&client_write),
            self.max_message_bytes,
        );
        tokio::select! {
            _ = to_client => {}
            _ = to_handler => {}
        }
        drop(slot);
        let _ = client_write.lock().await.shutdown().await;
    }
}

fn encode(info: ErrorInfo) -> BytesMut {
    let mut buf = BytesMut::new();
    // An ErrorResponse of a few short fields always encodes.
    let _ = ErrorResponse::from(info).encode(&mut buf);
    buf
}

/// Copies what the handler writes to the client.
async fn pump<W: AsyncWrite + Unpin>(
    mut from: impl AsyncRead + Unpin,
    to: Arc<Mutex<W>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.lock().await.write_all(&buf[..n]).await?;
    }
}

/// Copies the client's messages to the handler, checking each header first.
async fn filter<W: AsyncWrite + Unpin>(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    client: Arc<Mutex<W>>,
    max_message_bytes: u32,
) -> std::io::Result<()> {
    // The startup phase: length-first packets, until the StartupMessage.
    loop {
        let mut head = [0u8; 8];
        from.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if !(8..=MAX_STARTUP_BYTES).contains(&len) {
            return refuse(
                &client,
                "08P01",
                format!("invalid startup packet length {len}"),
            )
            .await;
        }
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            if len != 8 {
                return refuse(&client, "08P01", "invalid encryption request".into()).await;
            }
            client.lock().await.write_all(b"N").await?;
            continue;
        }
        // A StartupMessage, or a CancelRequest (which pgwire answers by
        // closing): either way the startup phase is over.
        to.write_all(&head).await?;
        copy_exact(&mut from, &mut to, u64::from(len - 8)).await?;
        break;
    }
    // The rest: typed messages, `type, length, body`.
    loop {
        let mut head = [0u8; 5];
        from.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len < 4 {
            return refuse(&client, "08P01", format!("invalid message length {len}")).await;
        }
        if len > max_message_bytes {
            tracing::warn!(
                len,
                limit = max_message_bytes,
                "pgwire message over the size limit; closing the connection"
            );
            return refuse(
                &client,
                "54000",
                format!(
                    "message too large: {len} bytes, more than the limit of {max_message_bytes} bytes"
                ),
            )
            .await;
        }
        to.write_all(&head).await?;
        copy_exact(&mut from, &mut to, u64::from(len - 4)).await?;
    }
}

async fn copy_exact(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    n: u64,
) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut from.take(n), to).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Sends a FATAL error to the client; the connection then ends.
async fn refuse<W: AsyncWrite + Unpin>(
    client: &Mutex<W>,
    sqlstate: &str,
    message: String,
) -> std::io::Result<()> {
    let info = ErrorInfo::new("FATAL".into(), sqlstate.into(), message);
    let mut w = client.lock().await;
    w.write_all(&encode(info)).await?;
    w.flush().await
}
