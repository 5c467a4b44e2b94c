//! Connection slots of the HTTP listener: at most `max_connections` open
//! connections; one more is answered `503` (ksqlDB's error body) and
//! closed, so idle or slow clients cannot exhaust Brook's sockets.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that hands axum only connections it has a slot for.
pub struct SlottedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl SlottedListener {
    /// Wraps `listener` with `max_connections` slots.
    pub fn new(listener: TcpListener, max_connections: usize) -> Self {
        SlottedListener {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// A connection holding its slot until it is dropped.
pub struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

async fn refuse(mut stream: TcpStream) {
    let body = r#"{"@type":"generic_error","error_code":50300,"message":"too many connections"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl axum::serve::Listener for SlottedListener {
    type Io = Slotted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Slotted, std::net::SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => {
                    return (
                        Slotted {
                            stream,
                            _slot: slot,
                        },
                        peer,
                    )
                }
                Err(_) => {
                    tracing::warn!(%peer, "http connection refused: too many connections");
                    tokio::spawn(refuse(stream));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
