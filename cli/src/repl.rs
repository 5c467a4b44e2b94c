//! The read-eval-print loop and the script runner.

use std::sync::Arc;

use brook_server::render::{cell_text, scalar_text};
use brook_server::{Output, Session, StatementKind};
use rustyline::error::ReadlineError;
use serde_json::Value;

use crate::remote::Remote;
use crate::render::{live_row, table};

/// Where statements run.
pub enum Backend {
    /// In this process.
    Embedded(Session),
    /// On a server, over HTTP.
    Remote(Remote),
}

/// The interactive loop: statements end with `;` and may span lines.
pub fn run(rt: &tokio::runtime::Runtime, mut backend: Backend) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".brook_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("Type SQL statements ending with ';'. Ctrl-C ends a push query; Ctrl-D exits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "brook> "
        } else {
            "  ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if buffer.is_empty() && line.trim().is_empty() {
                    continue;
                }
                if buffer.is_empty()
                    && matches!(
                        line.trim().to_ascii_lowercase().as_str(),
                        "exit" | "quit" | "\\q"
                    )
                {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !line.trim_end().ends_with(';') {
                    continue;
                }
                let _ = editor.add_history_entry(buffer.trim_end());
                let script = std::mem::take(&mut buffer);
                rt.block_on(run_script(&mut backend, &script));
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Runs every statement of a script, printing results; false on the first error.
pub async fn run_script(backend: &mut Backend, script: &str) -> bool {
    let result = match backend {
        Backend::Embedded(session) => run_embedded(session, script).await,
        Backend::Remote(remote) => run_remote(remote, script).await,
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("ERROR: {e}");
            false
        }
    }
}

async fn run_embedded(session: &mut Session, script: &str) -> anyhow::Result<()> {
    // A local script may be longer than one request may be: parse and run
    // it a statement at a time (each DEFINE then applies to what follows).
    for piece in brook_server::split_script(script)? {
        run_embedded_statements(session, &piece).await?;
    }
    Ok(())
}

async fn run_embedded_statements(session: &mut Session, script: &str) -> anyhow::Result<()> {
    for parsed in session.parse(script)? {
        // Ctrl-C abandons a query (a pull query's execution is dropped with
        // it); statements that change something run to the end.
        let output = if parsed.is_query() {
            tokio::select! {
                output = session.execute_parsed(parsed) => output?,
                _ = tokio::signal::ctrl_c() => {
                    println!("Query terminated");
                    continue;
                }
            }
        } else {
            session.execute_parsed(parsed).await?
        };
        match output {
            Output::Command { message, .. } => println!("{message}"),
            Output::Rows {
                schema, batches, ..
            }
            | Output::Listing {
                schema, batches, ..
            } => {
                let header: Vec<String> =
                    schema.fields().iter().map(|f| f.name().clone()).collect();
                let mut rows = Vec::new();
                for b in &batches {
                    for r in 0..b.num_rows() {
                        rows.push(
                            b.columns()
                                .iter()
                                .map(|c| cell_text(c.as_ref(), r))
                                .collect(),
                        );
                    }
                }
                print!("{}", table(&header, &rows));
                println!(
                    "({} row{})",
                    rows.len(),
                    if rows.len() == 1 { "" } else { "s" }
                );
            }
            Output::Stream { mut stream, .. } => {
                let header: Vec<String> = stream
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                print!(
                    "{}",
                    table(&header, &[])
                        .lines()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                println!();
                let ctrl_c = tokio::signal::ctrl_c();
                tokio::pin!(ctrl_c);
                loop {
                    tokio::select! {
                        row = stream.rows.recv() => match row {
                            Some(Ok(row)) => {
                                let cells: Vec<Option<String>> = row.iter().map(scalar_text).collect();
                                println!("{}", live_row(&cells));
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => break,
                        },
                        _ = &mut ctrl_c => { println!("Query terminated"); break; }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn run_remote(remote: &mut Remote, script: &str) -> anyhow::Result<()> {
    for (sql, kind) in brook_server::split_statements(script)? {
        match kind {
            StatementKind::Set(k, v) => {
                println!("Successfully changed local property '{k}' to '{v}'.");
                remote.properties.insert(k, v);
            }
            StatementKind::Unset(k) => {
                remote.properties.remove(&k);
                println!("Successfully unset local property '{k}'.");
            }
            StatementKind::Query => {
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let query = remote.query(&sql, |v| {
                    if let Some(names) = v.get("columnNames").and_then(Value::as_array) {
                        let header: Vec<String> = names
                            .iter()
                            .map(|n| n.as_str().unwrap_or_default().to_string())
                            .collect();
                        println!(
                            "{}",
                            table(&header, &[])
                                .lines()
                                .take(3)
                                .collect::<Vec<_>>()
                                .join("\n")
                        );
                    } else if let Some(cells) = v.as_array() {
                        let cells: Vec<Option<String>> = cells.iter().map(json_cell).collect();
                        println!("{}", live_row(&cells));
                    }
                    !done.load(std::sync::atomic::Ordering::Relaxed)
                });
                tokio::select! {
                    r = query => r?,
                    _ = tokio::signal::ctrl_c() => println!("Query terminated"),
                }
            }
            StatementKind::Other => {
                for entity in remote.ksql(&sql).await? {
                    print_entity(&entity);
                }
            }
        }
    }
    Ok(())
}

fn json_cell(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn print_entity(entity: &Value) {
    if let Some(msg) = entity
        .pointer("/commandStatus/message")
        .and_then(Value::as_str)
    {
        println!("{msg}");
        return;
    }
    // Listings: the first array of objects in the entity, as a table.
    let list = entity
        .as_object()
        .and_then(|o| {
            o.iter()
                .find_map(|(k, v)| (k != "warnings").then(|| v.as_array()).flatten())
        })
        .or_else(|| {
            entity
                .pointer("/sourceDescription/fields")
                .and_then(Value::as_array)
        });
    match list {
        Some(items) if items.iter().all(Value::is_object) => {
            let mut header: Vec<String> = Vec::new();
            for item in items {
                for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !header.contains(k) {
                        header.push(k.clone());
                    }
                }
            }
            let rows: Vec<Vec<Option<String>>> = items
                .iter()
                .map(|i| {
                    header
                        .iter()
                        .map(|h| i.get(h).and_then(json_cell))
                        .collect()
                })
                .collect();
            print!("{}", table(&header, &rows));
        }
        _ => println!(
            "{}",
            serde_json::to_string_pretty(entity).unwrap_or_default()
        ),
    }
}
