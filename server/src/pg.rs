//! The Postgres wire protocol front end (simple query protocol).
//!
//! Results are written inside `do_query` with a flush per row, so push
//! queries reach the client as they happen (pgwire's own response path
//! buffers until the end of the query).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use futures::{Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{
    CopyEncoder, CopyTextOptions, DataRowEncoder, FieldFormat, FieldInfo, Response, Tag,
};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyDone, CopyOutResponse};
use pgwire::messages::data::{FieldDescription, RowDescription};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

mod door;

use crate::error::ServerError;
use crate::render::{cell_text, scalar_text};
use crate::session::{Brook, Output, Session};

/// Per-connection handler: one session per client.
struct Handler {
    session: Mutex<Session>,
    /// Registers the connection so that a CancelRequest (psql's Ctrl-C)
    /// can stop its running statement, e.g. a push query.
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Handler {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }
}

struct Factory {
    handler: Arc<Handler>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Factory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.handler)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Accepts pgwire connections until the listener fails. Each passes the
/// front door (`pg/door.rs`: connection slots, message sizes) on its way to pgwire.
pub async fn serve(brook: Arc<Brook>, listener: TcpListener) {
    let connections = Arc::new(ConnectionManager::new());
    let cancel = Arc::new(DefaultCancelHandler::new(Arc::clone(&connections)));
    let limits = *brook.limits();
    let door = Arc::new(door::Door::new(
        limits.max_connections,
        limits.max_request_bytes(),
    ));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pgwire accept failed");
                // Out of file descriptors, say: let some close first.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = door.admit() else {
            tracing::warn!(%peer, max = limits.max_connections, "pgwire connection refused: too many clients");
            tokio::spawn(door::Door::refuse(socket));
            continue;
        };
        let (ours, theirs) = match tokio::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "pgwire: no socket pair for a connection");
                continue;
            }
        };
        let factory = Arc::new(Factory {
            handler: Arc::new(Handler {
                session: Mutex::new(brook.session()),
                connections: Arc::clone(&connections),
            }),
            cancel: Arc::clone(&cancel),
        });
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket_unix(theirs, factory).await {
                tracing::debug!(%peer, error = %e, "pgwire connection ended");
            }
        });
        let door = Arc::clone(&door);
        tokio::spawn(async move { door.relay(socket, ours, slot).await });
    }
}

/// Binds the pgwire listener.
pub async fn bind(addr: SocketAddr) -> crate::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen {
            addr: addr.to_string(),
            source,
        })
}

fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 => Type::INT2,
        DataType::Int32 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(..) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        _ => Type::VARCHAR,
    }
}

fn fields(schema: &SchemaRef) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                FieldInfo::new(
                    f.name().clone(),
                    None,
                    None,
                    pg_type(f.data_type()),
                    FieldFormat::Text,
                )
            })
            .collect(),
    )
}

/// The ErrorResponse for a Brook error.
pub fn error_info(e: &ServerError) -> ErrorInfo {
    let message = e.to_string();
    let mut info = ErrorInfo::new(
        "ERROR".to_string(),
        e.sqlstate().to_string(),
        message.clone(),
    );
    // Point psql at the offending character when the parser knows it.
    if let Some(pos) = parse_position(&message) {
        info.position = Some(pos.to_string());
    }
    info
}

fn parse_position(message: &str) -> Option<usize> {
    let line_at = message.rfind("Line: ")?;
    let rest = &message[line_at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let (line, col) = (line.parse::<usize>().ok()?, col.parse::<usize>().ok()?);
    (line == 1).then_some(col)
}

fn row_cells(batch: &RecordBatch, row: usize) -> Vec<Option<String>> {
    batch
        .columns()
        .iter()
        .map(|c| cell_text(c.as_ref(), row))
        .collect()
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let user_error = |e: ServerError| PgWireError::UserError(Box::new(error_info(&e)));
        let statements = session.parse(query).map_err(user_error)?;
        for parsed in statements {
            let output = session.execute_parsed(parsed).await.map_err(user_error)?;
            match output {
                Output::Command { tag, .. } => {
                    client
                        .feed(PgWireBackendMessage::CommandComplete(Tag::new(&tag).into()))
                        .await?;
                }
                Output::Rows {
                    schema,
                    batches,
                    copy,
                } => send_batches(client, &schema, &batches, copy).await?,
                Output::Listing {
                    schema, batches, ..
                } => send_batches(client, &schema, &batches, false).await?,
                Output::Stream { mut stream, copy } => {
                    let info = fields(&stream.schema);
                    if copy {
                        send_copy_start(client, info.len()).await?;
                    } else {
                        send_row_description(client, &info).await?;
                    }
                    client.flush().await?;
                    let mut n = 0usize;
                    while let Some(row) = stream.rows.recv().await {
                        let row = row.map_err(|e| user_error(e.into()))?;
                        let cells = row.iter().map(scalar_text).collect();
                        send_row(client, &info, cells, copy, true).await?;
                        n += 1;
                    }
                    finish(client, n, copy).await?;
                }
            }
        }
        Ok(Vec::new())
    }
}

async fn send_batches<C>(
    client: &mut C,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    copy: bool,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let info = fields(schema);
    if copy {
        send_copy_start(client, info.len()).await?;
    } else {
        send_row_description(client, &info).await?;
    }
    let mut n = 0usize;
    for batch in batches {
        for row in 0..batch.num_rows() {
            send_row(client, &info, row_cells(batch, row), copy, false).await?;
            n += 1;
        }
    }
    finish(client, n, copy).await
}

async fn send_row_description<C>(client: &mut C, info: &Arc<Vec<FieldInfo>>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let desc = RowDescription::new(info.iter().map(FieldDescription::from).collect());
    client
        .feed(PgWireBackendMessage::RowDescription(desc))
        .await?;
    Ok(())
}

async fn send_copy_start<C>(client: &mut C, columns: usize) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let msg = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
    client
        .feed(PgWireBackendMessage::CopyOutResponse(msg))
        .await?;
    Ok(())
}

async fn send_row<C>(
    client: &mut C,
    info: &Arc<Vec<FieldInfo>>,
    cells: Vec<Option<String>>,
    copy: bool,
    flush: bool,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let msg = if copy {
        let mut enc = CopyEncoder::new_text(Arc::clone(info), CopyTextOptions::default());
        for c in &cells {
            enc.encode_field(c)?;
        }
        PgWireBackendMessage::CopyData(enc.take_copy())
    } else {
        let mut enc = DataRowEncoder::new(Arc::clone(info));
        for c in &cells {
            enc.encode_field(c)?;
        }
        PgWireBackendMessage::DataRow(enc.take_row())
    };
    if flush {
        client.send(msg).await?;
    } else {
        client.feed(msg).await?;
    }
    Ok(())
}

async fn finish<C>(client: &mut C, n: usize, copy: bool) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if copy {
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(n).into(),
            ))
            .await?;
    } else {
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("SELECT").with_rows(n).into(),
            ))
            .await?;
    }
    Ok(())
}
