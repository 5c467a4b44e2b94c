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
//!   without TLS does, so `sslmode=prefer` clients go on in the clear;
//! - every message must hold exactly the fields its type and counts
//!   announce (the startup packet too), or the connection ends with
//!   SQLSTATE 08P01 ("insufficient data left in message", "invalid message
//!   format", "invalid frontend message type N"), as Postgres checks:
//!   pgwire's decoders trust those counts and would read on into the next
//!   message, or past the buffer.
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
        let mut body = vec![0u8; (len - 8) as usize];
        from.read_exact(&mut body).await?;
        if let Err(why) = startup_well_formed(code, &body) {
            return refuse(&client, "08P01", format!("invalid startup packet: {why}")).await;
        }
        to.write_all(&head).await?;
        to.write_all(&body).await?;
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
        if head[0] == b'd' || head[0] == b'p' {
            // CopyData and password messages: pgwire takes the body whole.
            to.write_all(&head).await?;
            copy_exact(&mut from, &mut to, u64::from(len - 4)).await?;
            continue;
        }
        // Bounded by the size check above.
        let mut body = vec![0u8; (len - 4) as usize];
        from.read_exact(&mut body).await?;
        if let Err(why) = well_formed(head[0], &body) {
            tracing::warn!(
                message = head[0],
                why,
                "malformed pgwire message; closing the connection"
            );
            return refuse(&client, "08P01", why).await;
        }
        to.write_all(&head).await?;
        to.write_all(&body).await?;
    }
}

/// The CancelRequest code (the second int of its packet).
const CANCEL_REQUEST: u32 = 80_877_102;

/// A reader of a message body that fails, rather than panics, past its end.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("insufficient data left in message ({what})"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn cstring(&mut self, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| format!("invalid string in message ({what})"))?;
        let s = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn u16(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("invalid message format".into())
        }
    }
}

/// Whether a typed message holds exactly the fields its type and counts
/// announce, as Postgres checks. pgwire's decoders trust the counts and
/// read past a message's end, into the next one, so the door lets no
/// other message through.
fn well_formed(code: u8, body: &[u8]) -> Result<(), String> {
    let mut f = Fields(body);
    match code {
        b'Q' | b'f' => {
            f.cstring("query")?;
        }
        b'P' => {
            f.cstring("statement name")?;
            f.cstring("query")?;
            let n = f.u16("parameter type count")?;
            f.take(n * 4, "parameter types")?;
        }
        b'B' => {
            f.cstring("portal name")?;
            f.cstring("statement name")?;
            let n = f.u16("parameter format count")?;
            f.take(n * 2, "parameter formats")?;
            for _ in 0..f.u16("parameter count")? {
                let len = f.i32("parameter length")?;
                if len > 0 {
                    f.take(len as usize, "parameter value")?;
                }
            }
            let n = f.u16("result format count")?;
            f.take(n * 2, "result formats")?;
        }
        b'D' | b'C' => {
            f.take(1, "target type")?;
            f.cstring("name")?;
        }
        b'E' => {
            f.cstring("portal name")?;
            f.i32("row limit")?;
        }
        b'S' | b'H' | b'X' | b'c' => {}
        other => return Err(format!("invalid frontend message type {other}")),
    }
    f.end()
}

/// Whether a StartupMessage (protocol 3: `name\0value\0`… then `\0`) or
/// a CancelRequest (two ints) is exactly that. Other protocol versions go
/// on to pgwire, which refuses them.
fn startup_well_formed(code: u32, body: &[u8]) -> Result<(), String> {
    let mut f = Fields(body);
    if code == CANCEL_REQUEST {
        f.take(8, "process id and secret key")?;
        return f.end();
    }
    if code >> 16 != 3 {
        return Ok(());
    }
    loop {
        if f.cstring("parameter name")?.is_empty() {
            return f.end();
        }
        f.cstring("parameter value")?;
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

#[cfg(test)]
mod tests {
    use super::{startup_well_formed, well_formed};

    #[test]
    fn messages_must_hold_exactly_what_they_announce() {
        assert!(well_formed(b'P', b"\0SELECT 1\0\0\0").is_ok());
        assert!(well_formed(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17").is_ok());
        assert!(well_formed(b'P', b"\0SELECT $1\0\0\x02\0\0\0\x17").is_err());
        assert!(well_formed(b'P', b"\0SELECT 1").is_err());
        assert!(well_formed(b'P', b"\0SELECT 1\0\0\0trailing").is_err());
        assert!(well_formed(b'B', b"\0\0\0\0\0\x01\0\0\0\x011\0\0").is_ok());
        assert!(well_formed(b'B', b"\0\0\0\0\0\x01\0\0\0\x051\0\0").is_err());
        assert!(well_formed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xff\0\0").is_ok());
        assert!(well_formed(b'D', b"S\0").is_ok());
        assert!(well_formed(b'D', b"").is_err());
        assert!(well_formed(b'E', b"\0\0\0\0\0").is_ok());
        assert!(well_formed(b'E', b"\0\0\0").is_err());
        assert!(well_formed(b'Q', b"SELECT 1\0").is_ok());
        assert!(well_formed(b'Q', b"SELECT 1\0X\0\0\0\x04").is_err());
        assert!(well_formed(b'S', b"").is_ok());
        assert!(well_formed(b'S', b"P").is_err());
        assert!(well_formed(b's', b"").is_err());
    }

    #[test]
    fn startup_packets_must_be_exact() {
        assert!(startup_well_formed(196_608, b"user\0u\0\0").is_ok());
        assert!(startup_well_formed(196_608, b"user\0u\0").is_err());
        assert!(startup_well_formed(196_608, b"user\0u\0\0P").is_err());
        assert!(startup_well_formed(super::CANCEL_REQUEST, &[0; 8]).is_ok());
        assert!(startup_well_formed(super::CANCEL_REQUEST, &[0; 4]).is_err());
    }
}
