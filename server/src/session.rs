//! `Brook` (one per data directory: engine + catalog) and `Session` (one
//! per client: SQL text in, outputs out).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use brook_executor::processing_log;
use brook_executor::{blocking, Engine, EngineConfig, PushStream};
use brook_planner::binder::{check_upgrade, plan_alter, plan_insert_select, FormatDefaults};
use brook_planner::binder::{
    plan_create_as_select, plan_create_source, plan_insert, plan_pull, plan_stream,
};
use brook_planner::catalog::{Catalog, Format, HeaderSource, QueryDef, SourceDef, SourceKind};
use brook_planner::functions::{self, FunctionInfo};
use brook_planner::parser::{self, Emit, Parsed, ShowWhat, Statement};
use brook_planner::plan::StreamPlan;
use brook_planner::PlanError;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::access::{self, TopicUse};
use crate::error::{Result, ServerError};
use crate::limits::Limits;

/// What a statement produced.
pub enum Output {
    /// A statement that changes something: a Postgres command tag and a
    /// ksqlDB-style status message.
    Command {
        /// e.g. `CREATE STREAM`, `INSERT 0 3`.
        tag: String,
        /// e.g. `Stream created`.
        message: String,
        /// The persistent query started, if any.
        query_id: Option<String>,
    },
    /// A finite result (pull query, SHOW, DESCRIBE).
    Rows {
        /// Column names and types.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
        /// Asked for as `COPY … TO STDOUT`.
        copy: bool,
    },
    /// A push query's rows as they happen.
    Stream {
        /// The rows.
        stream: PushStream,
        /// Asked for as `COPY … TO STDOUT`.
        copy: bool,
    },
    /// Entities of a `SHOW`/`DESCRIBE` statement, for the HTTP API's shapes.
    Listing {
        /// The same content as rows.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
        /// ksqlDB's JSON entity for `/ksql`.
        entity: serde_json::Value,
    },
}

/// A persisted catalog command: the text of a DDL statement that succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CatalogCommand {
    pub(crate) sql: String,
    /// Session properties in force when it ran (they choose defaults such
    /// as the value format), so that replay resolves it the same way.
    #[serde(default)]
    properties: BTreeMap<String, String>,
    /// For CREATE: the partition count the source got (an existing topic's
    /// count wins over the statement's), so that replay gives it again.
    #[serde(default)]
    partitions: Option<u32>,
    /// Set on the marker `brook catalog truncate` writes in place of the
    /// commands it dropped: replay skips it, and its sequence number keeps
    /// later commands (and their query ids) from reusing a dropped one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dropped: Option<String>,
}

impl CatalogCommand {
    /// The marker that stands for commands a repair dropped.
    pub(crate) fn dropped(why: String) -> CatalogCommand {
        CatalogCommand {
            sql: String::new(),
            properties: BTreeMap::new(),
            partitions: None,
            dropped: Some(why),
        }
    }
}

/// Format defaults from ksqlDB's `ksql.persistence.default.format.*`
/// properties; absent means Brook's defaults, an empty value means none.
/// ksqlDB's record cache, `cache.max.bytes.buffering` (10 MB unless set):
/// while it is above 0, an aggregation emits one change per group per
/// epoch; at 0, one per input record (what ksqlDB's tests set).
fn consolidates(properties: &BTreeMap<String, String>) -> bool {
    [
        "cache.max.bytes.buffering",
        "ksql.streams.cache.max.bytes.buffering",
    ]
    .iter()
    .filter_map(|k| properties.get(*k))
    .next_back()
    .is_none_or(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

fn format_defaults(properties: &BTreeMap<String, String>) -> Result<FormatDefaults> {
    let mut d = FormatDefaults::default();
    if let Some(v) = properties.get("ksql.persistence.default.format.value") {
        d.value = if v.is_empty() {
            None
        } else {
            Some(Format::parse(v)?)
        };
    }
    if let Some(v) = properties.get("ksql.persistence.default.format.key") {
        if !v.is_empty() {
            d.key = Format::parse(v)?;
        }
    }
    Ok(d)
}

/// One Brook instance: engine and catalog over a data directory.
pub struct Brook {
    engine: Arc<Engine>,
    catalog: RwLock<Catalog>,
    ddl: tokio::sync::Mutex<()>,
    /// The plan of every persistent query, for `RESUME`.
    plans: std::sync::Mutex<BTreeMap<String, StreamPlan>>,
    limits: Limits,
    /// Push queries of the HTTP API, by query id, for `/close-query`.
    pub(crate) push_queries: Arc<crate::http::PushQueries>,
}

impl Brook {
    /// Opens a data directory: storage, then the catalog replayed from its
    /// command log, then the persistent queries resumed from their checkpoints.
    pub async fn open(data_dir: &Path) -> Result<Arc<Brook>> {
        Self::open_with(data_dir, true).await
    }

    /// [`Brook::open`]; with `durable` false nothing is fsynced, for tests
    /// that throw their data directory away.
    pub async fn open_with(data_dir: &Path, durable: bool) -> Result<Arc<Brook>> {
        let config = if durable {
            EngineConfig::default()
        } else {
            EngineConfig::throwaway()
        };
        Self::open_with_config(data_dir, config).await
    }

    /// [`Brook::open`] with explicit engine settings (`log.flush`, …).
    pub async fn open_with_config(data_dir: &Path, config: EngineConfig) -> Result<Arc<Brook>> {
        Self::open_with_limits(data_dir, config, Limits::default()).await
    }

    /// [`Brook::open_with_config`] with explicit limits.
    pub async fn open_with_limits(
        data_dir: &Path,
        config: EngineConfig,
        limits: Limits,
    ) -> Result<Arc<Brook>> {
        let engine = Engine::open_with(data_dir, config)?;
        let mut catalog = Catalog::default();
        let mut plans: BTreeMap<String, StreamPlan> = BTreeMap::new();
        let entries = engine.catalog_store().entries().map_err(|e| match e {
            brook_storage::StorageError::CatalogRecord { offset, reason } => ServerError::Catalog {
                offset,
                seq: None,
                reason,
            },
            e => e.into(),
        })?;
        for entry in entries {
            let seq = entry.seq;
            let bad = |reason: String| ServerError::Catalog {
                offset: entry.offset,
                seq: Some(seq),
                reason,
            };
            let cmd: CatalogCommand =
                serde_json::from_slice(&entry.command).map_err(|e| bad(e.to_string()))?;
            if cmd.dropped.is_some() {
                continue;
            }
            let parsed = parser::parse_statement(&cmd.sql).map_err(|e| bad(e.to_string()))?;
            let created = apply_ddl(&mut catalog, &parsed, seq, &cmd.properties, cmd.partitions)
                .map_err(|e| bad(e.to_string()))?;
            plans.extend(created);
        }
        // ksqlDB's processing log, unless a statement defined that name.
        catalog
            .sources
            .entry(processing_log::STREAM.to_string())
            .or_insert_with(processing_log::source_def);
        for def in catalog.sources.values() {
            engine.ensure_topic(def)?;
        }
        let brook = Arc::new(Brook {
            engine,
            catalog: RwLock::new(catalog),
            ddl: tokio::sync::Mutex::new(()),
            plans: std::sync::Mutex::new(BTreeMap::new()),
            limits,
            push_queries: Arc::default(),
        });
        // Queries still in the catalog after replay run with the plans
        // made when their statement was replayed.
        // Paused ones keep their plan for RESUME.
        let queries: Vec<(String, bool)> = brook
            .catalog()
            .queries
            .values()
            .map(|q| (q.id.clone(), q.paused))
            .collect();
        for (id, paused) in queries {
            let plan = plans
                .remove(&id)
                .ok_or_else(|| PlanError::Internal(format!("no plan for query {id}")))?;
            if paused {
                brook.remember_plan(&id, plan);
            } else {
                brook.start_query(&id, plan)?;
            }
        }
        brook.engine.finish_startup()?;
        Ok(brook)
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the catalog.
    pub fn catalog_snapshot(&self) -> Catalog {
        self.catalog().clone()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts a persistent query with the plan `apply_ddl` made for it.
    fn remember_plan(&self, id: &str, plan: StreamPlan) {
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), plan);
    }

    fn start_query(&self, id: &str, plan: StreamPlan) -> Result<()> {
        self.remember_plan(id, plan.clone());
        let sink = {
            let catalog = self.catalog();
            let q = catalog
                .queries
                .get(id)
                .ok_or_else(|| PlanError::Internal(format!("query {id} is not in the catalog")))?;
            catalog.source(&q.sink)?.clone()
        };
        self.engine.start_query(id, plan, sink)?;
        Ok(())
    }

    /// A new session.
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            brook: Arc::clone(self),
            properties: BTreeMap::new(),
            variables: BTreeMap::new(),
        }
    }

    /// Stops every persistent query (state stays for the next open).
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }
}

/// Applies a DDL statement to a catalog (no side effects elsewhere).
/// The query that wrote `old`, and its plan, for `CREATE OR REPLACE … AS
/// SELECT`; refused when no query writes it.
fn replaced_query(catalog: &Catalog, old: &SourceDef) -> Result<(QueryDef, StreamPlan)> {
    let not_a_query = || {
        PlanError::Invalid(format!(
            "Cannot upgrade data source {}: it was not created by CREATE … AS SELECT",
            old.name
        ))
    };
    let q = old
        .query_id
        .as_ref()
        .and_then(|id| catalog.queries.get(id))
        .ok_or_else(not_a_query)?
        .clone();
    let Statement::CreateAsSelect {
        kind,
        props,
        query,
        partition_by,
        emit,
        ..
    } = parser::parse_statement(&q.sql)?.statement
    else {
        return Err(not_a_query().into());
    };
    let (_, plan) = plan_create_as_select(
        catalog,
        kind,
        &old.name,
        &props,
        &query,
        partition_by.as_deref(),
        &q.id,
        emit == Some(Emit::Final),
    )?;
    Ok((q, plan))
}

pub(crate) fn apply_ddl(
    catalog: &mut Catalog,
    parsed: &Parsed,
    seq: u64,
    properties: &BTreeMap<String, String>,
    partitions: Option<u32>,
) -> Result<Option<(String, StreamPlan)>> {
    let mut created = None;
    match &parsed.statement {
        Statement::CreateSource {
            kind,
            name,
            columns,
            props,
            source,
            or_replace,
            ..
        } => {
            let columns = catalog.resolve_columns(columns)?;
            let mut def =
                plan_create_source(*kind, name, &columns, props, format_defaults(properties)?)?;
            def.partitions = partitions.unwrap_or(def.partitions);
            def.read_only = *source;
            if let Some(old) = catalog.sources.get(name).filter(|_| *or_replace) {
                if let Some(q) = &old.query_id {
                    return Err(PlanError::Invalid(format!(
                        "Cannot upgrade data source {name}: query {q} writes it; replace it with CREATE OR REPLACE … AS SELECT"
                    ))
                    .into());
                }
                check_upgrade(old, &def, None)?;
                def.partitions = old.partitions;
            }
            catalog.sources.insert(name.clone(), def);
        }
        Statement::CreateAsSelect {
            kind,
            name,
            props,
            query,
            partition_by,
            or_replace,
            emit,
            ..
        } => {
            // `CREATE OR REPLACE` of a query's sink: the same query, upgraded
            // in place (its position and state kept).
            let replaced = match catalog.sources.get(name).filter(|_| *or_replace) {
                Some(old) => Some(replaced_query(catalog, old)?),
                None => None,
            };
            let id = replaced
                .as_ref()
                .map_or_else(|| query_id(*kind, name, seq), |(q, _)| q.id.clone());
            let (mut def, plan) = plan_create_as_select(
                catalog,
                *kind,
                name,
                props,
                query,
                partition_by.as_deref(),
                &id,
                *emit == Some(Emit::Final),
            )?;
            def.partitions = partitions.unwrap_or(def.partitions);
            let mut paused = false;
            if let (Some((old_query, old_plan)), Some(old)) = (&replaced, catalog.sources.get(name))
            {
                check_upgrade(old, &def, Some((old_plan, &plan)))?;
                def.partitions = old.partitions;
                paused = old_query.paused;
            }
            catalog.queries.insert(
                id.clone(),
                QueryDef {
                    id: id.clone(),
                    sql: parsed.sql.clone(),
                    sink: name.clone(),
                    sources: plan.input_names(),
                    paused,
                },
            );
            let mut plan = plan;
            plan.consolidate = consolidates(properties);
            created = Some((id, plan));
            catalog.sources.insert(name.clone(), def);
        }
        Statement::InsertSelect {
            target,
            query,
            partition_by,
        } => {
            let id = format!("INSERTQUERY_{seq}");
            let (_, plan) = plan_insert_select(catalog, target, query, partition_by.as_deref())?;
            catalog.queries.insert(
                id.clone(),
                QueryDef {
                    id: id.clone(),
                    sql: parsed.sql.clone(),
                    sink: target.clone(),
                    sources: plan.input_names(),
                    paused: false,
                },
            );
            let mut plan = plan;
            plan.consolidate = consolidates(properties);
            created = Some((id, plan));
        }
        Statement::Alter {
            kind,
            name,
            columns,
        } => {
            let columns = catalog.resolve_columns(columns)?;
            let def = plan_alter(catalog, *kind, name, &columns)?;
            catalog.sources.insert(name.clone(), def);
        }
        Statement::CreateType {
            name,
            ty,
            if_not_exists,
        } => {
            if let Some(existing) = catalog.types.get(name) {
                if !*if_not_exists {
                    return Err(PlanError::Invalid(format!(
                        "Cannot register custom type '{name}' since it is already registered with type: {existing}"
                    ))
                    .into());
                }
            } else {
                let ty = catalog.resolve_type(ty)?;
                catalog.types.insert(name.clone(), ty);
            }
        }
        Statement::DropType { name, if_exists } => {
            if catalog.types.remove(name).is_none() && !*if_exists {
                return Err(PlanError::Invalid(format!("Type {name} does not exist.")).into());
            }
        }
        Statement::Drop { name, .. } => {
            if let Some(def) = catalog.sources.remove(name) {
                if let Some(q) = def.query_id {
                    catalog.queries.remove(&q);
                }
            }
        }
        Statement::Terminate { id: Some(id) } => {
            catalog.queries.remove(id);
        }
        Statement::Terminate { id: None } => catalog.queries.clear(),
        Statement::PauseResume { id, pause } => {
            for q in catalog.queries.values_mut() {
                if id.as_ref().is_none_or(|id| *id == q.id) {
                    q.paused = *pause;
                }
            }
        }
        _ => return Err(PlanError::Internal("not a DDL statement".into()).into()),
    }
    Ok(created)
}

/// The queries `TERMINATE|PAUSE|RESUME id|ALL` names (`None`: all of them).
fn query_ids(catalog: &Catalog, id: Option<&str>) -> Result<Vec<String>> {
    match id {
        Some(id) if !catalog.queries.contains_key(id) => Err(PlanError::NotFound {
            kind: "query",
            name: id.to_string(),
        }
        .into()),
        Some(id) => Ok(vec![id.to_string()]),
        None => Ok(catalog.queries.keys().cloned().collect()),
    }
}

fn query_id(kind: SourceKind, name: &str, seq: u64) -> String {
    let prefix = if kind == SourceKind::Table {
        "CTAS"
    } else {
        "CSAS"
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}_{clean}_{seq}")
}

/// How a client should route a statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `SELECT` or `COPY`: a query endpoint.
    Query,
    /// `SET 'name' = 'value'`: a client-side property.
    Set(String, String),
    /// `UNSET 'name'`.
    Unset(String),
    /// Anything else: the statement endpoint.
    Other,
}

/// Splits a script into statements and says how each is routed, for
/// clients that talk to a remote server.
pub fn split_statements(sql: &str) -> Result<Vec<(String, StatementKind)>> {
    Ok(parser::parse(sql)?
        .into_iter()
        .map(|p| {
            let kind = match p.statement {
                Statement::Select { .. } | Statement::CopyTo { .. } | Statement::Print { .. } => {
                    StatementKind::Query
                }
                Statement::Set { name, value } => StatementKind::Set(name, value),
                Statement::Unset { name } => StatementKind::Unset(name),
                _ => StatementKind::Other,
            };
            (p.sql, kind)
        })
        .collect())
}

/// A client's session: its properties and the statements it runs.
pub struct Session {
    brook: Arc<Brook>,
    properties: BTreeMap<String, String>,
    /// `DEFINE`d variables, substituted for `${name}`.
    variables: BTreeMap<String, String>,
}

impl Session {
    /// Sets a session property (`SET 'auto.offset.reset' = 'earliest'`).
    pub fn set_property(&mut self, name: &str, value: &str) {
        self.properties.insert(name.to_string(), value.to_string());
    }

    /// Runs a script; stops at the first error.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for parsed in self.parse(sql)? {
            out.push(self.execute_parsed(parsed).await?);
        }
        Ok(out)
    }

    /// Parses a script into statements without running them. `${name}`
    /// references are replaced by the session's variables, and by those a
    /// `DEFINE` earlier in the script sets (statements run in order and
    /// stop at the first error, so this is what running them would see).
    pub fn parse(&self, sql: &str) -> Result<Vec<Parsed>> {
        self.check_size(sql)?;
        // Parsing is CPU work (linear in the text, up to the size limit):
        // the worker's other connections move to another thread meanwhile.
        blocking(|| self.parse_checked(sql))
    }

    fn parse_checked(&self, sql: &str) -> Result<Vec<Parsed>> {
        let substitution = self
            .properties
            .get("ksql.variable.substitution.enable")
            .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        if !substitution || !sql.contains("${") {
            return Ok(parser::parse(sql)?);
        }
        let mut variables = self.variables.clone();
        let mut out = Vec::new();
        for piece in parser::split_script(sql)? {
            let text = parser::substitute_variables(&piece, &|n| variables.get(n).cloned())?;
            self.check_size(&text)?;
            for parsed in parser::parse(&text)? {
                match &parsed.statement {
                    Statement::Define { name, value } => {
                        variables.insert(name.clone(), value.clone());
                    }
                    Statement::Undefine { name } => {
                        variables.remove(name);
                    }
                    _ => {}
                }
                out.push(parsed);
            }
        }
        Ok(out)
    }

    /// Refuses SQL text over the statement size limit, before any parsing.
    fn check_size(&self, sql: &str) -> Result<()> {
        let max = self.brook.limits.max_statement_bytes;
        if sql.len() > max {
            return Err(ServerError::TooLarge(format!(
                "statement too large: {} bytes, more than the limit of {max} bytes",
                sql.len()
            )));
        }
        Ok(())
    }

    /// Sets a variable, as `DEFINE` does (the CLI's `--define`, the HTTP
    /// API's `sessionVariables`).
    pub fn define(&mut self, name: &str, value: &str) {
        self.variables.insert(name.to_string(), value.to_string());
    }

    fn reads_from_beginning(&self) -> bool {
        self.properties
            .get("auto.offset.reset")
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"))
    }

    /// Runs one parsed statement.
    pub async fn execute_parsed(&mut self, parsed: Parsed) -> Result<Output> {
        let brook = Arc::clone(&self.brook);
        match &parsed.statement {
            Statement::CreateSource { .. }
            | Statement::CreateAsSelect { .. }
            | Statement::Drop { .. }
            | Statement::Alter { .. }
            | Statement::Terminate { .. }
            | Statement::PauseResume { .. }
            | Statement::CreateType { .. }
            | Statement::DropType { .. }
            | Statement::InsertSelect { .. } => brook.execute_ddl(parsed, &self.properties).await,
            Statement::InsertValues {
                target,
                columns,
                rows,
            } => {
                let (def, rows) = plan_insert(&brook.catalog(), target, columns, rows)?;
                access::check(&def.topic, TopicUse::Write)?;
                // The append fsyncs: keep it off the async worker threads.
                let engine = Arc::clone(&brook.engine);
                let n = tokio::task::spawn_blocking(move || engine.insert(&def, &rows))
                    .await
                    .map_err(|e| PlanError::Internal(format!("insert task failed: {e}")))??;
                Ok(Output::Command {
                    tag: format!("INSERT 0 {n}"),
                    message: format!("Inserted {n} row(s)"),
                    query_id: None,
                })
            }
            Statement::Select { query, emit, .. } => self.run_query(query, *emit, false).await,
            Statement::CopyTo { query, emit } => self.run_query(query, *emit, true).await,
            Statement::Flush => {
                brook.engine.flush().await?;
                Ok(Output::Command {
                    tag: "FLUSH".into(),
                    message: "Flushed".into(),
                    query_id: None,
                })
            }
            Statement::Set { name, value } => {
                self.properties.insert(name.clone(), value.clone());
                Ok(Output::Command {
                    tag: "SET".into(),
                    message: format!("Successfully changed local property '{name}' to '{value}'."),
                    query_id: None,
                })
            }
            Statement::Define { name, value } => {
                self.variables.insert(name.clone(), value.clone());
                Ok(Output::Command {
                    tag: "DEFINE".into(),
                    message: format!("Defined variable {name}."),
                    query_id: None,
                })
            }
            Statement::Undefine { name } => {
                let message = if self.variables.remove(name).is_some() {
                    format!("Undefined variable {name}.")
                } else {
                    format!("Cannot undefine variable '{name}' which was never defined")
                };
                Ok(Output::Command {
                    tag: "UNDEFINE".into(),
                    message,
                    query_id: None,
                })
            }
            Statement::Unset { name } => {
                self.properties.remove(name);
                Ok(Output::Command {
                    tag: "UNSET".into(),
                    message: format!("Successfully unset local property '{name}'."),
                    query_id: None,
                })
            }
            Statement::Show { what, extended } => Ok(self.show(*what, *extended, &parsed.sql)),
            Statement::Print {
                topic,
                from_beginning,
                interval,
                limit,
            } => {
                // Unquoted names were upper-cased; ksqlDB then also tries the name as written.
                let log = brook.engine.log();
                let name = if log.topic_exists(topic) || parsed.sql.contains('\'') {
                    topic.clone()
                } else {
                    log.topics()
                        .into_iter()
                        .map(|(n, _)| n)
                        .find(|n| n.eq_ignore_ascii_case(topic))
                        .unwrap_or_else(|| topic.clone())
                };
                access::check(&name, TopicUse::Read)?;
                if !log.topic_exists(&name) {
                    return Err(ServerError::Storage(
                        brook_storage::StorageError::TopicNotFound(name),
                    ));
                }
                let stream = brook.engine.print(
                    &name,
                    *from_beginning || self.reads_from_beginning(),
                    *interval,
                    *limit,
                )?;
                Ok(Output::Stream {
                    stream,
                    copy: false,
                })
            }
            Statement::Describe { name, .. } => self.describe(name, &parsed.sql),
            Statement::Explain { target } => self.explain(target, &parsed.sql),
            Statement::DescribeFunction { name } => describe_function(name, &parsed.sql),
        }
    }

    async fn run_query(
        &self,
        query: &datafusion::sql::sqlparser::ast::Query,
        emit: Option<Emit>,
        copy: bool,
    ) -> Result<Output> {
        let catalog = self.brook.catalog().clone();
        if emit.is_some() {
            let mut plan = blocking(|| plan_stream(&catalog, query, None, None))?;
            plan.consolidate = consolidates(&self.properties);
            if emit == Some(Emit::Final) {
                brook_planner::binder::make_emit_final(&mut plan)?;
            }
            let stream = self.brook.engine.push(plan, self.reads_from_beginning())?;
            Ok(Output::Stream { stream, copy })
        } else {
            let plan = blocking(|| plan_pull(&catalog, query))?;
            let table = match plan.sources.as_slice() {
                [only] if only.kind == SourceKind::Table => Some(only.clone()),
                _ => None,
            };
            let (schema, batches) = self.pull(plan).await?;
            let schema = annotate_pull_schema(&schema, table.as_ref());
            Ok(Output::Rows {
                schema,
                batches,
                copy,
            })
        }
    }

    /// Runs a pull query off the async workers (its scan and DataFusion's
    /// execution are CPU work that would stall every other client), under
    /// the statement timeout: past it, execution is dropped at its next
    /// await point and the client gets Postgres's "canceling statement due
    /// to statement timeout" (SQLSTATE 57014). When the caller drops this
    /// future (a pgwire CancelRequest, a client gone), the execution is
    /// dropped too, at its next await point.
    async fn pull(
        &self,
        plan: brook_planner::plan::PullPlan,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let engine = Arc::clone(&self.brook.engine);
        let timeout = self.brook.limits.statement_timeout;
        let max_bytes = self.brook.limits.max_pull_bytes;
        let handle = tokio::runtime::Handle::current();
        let cancel = tokio_util::sync::CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let run = tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                tokio::select! {
                    result = tokio::time::timeout(timeout, engine.pull(plan, max_bytes)) => Some(result),
                    () = cancel.cancelled() => None,
                }
            })
        });
        match run.await {
            Ok(Some(Ok(result))) => Ok(result?),
            Ok(Some(Err(_))) => Err(ServerError::Canceled(
                "canceling statement due to statement timeout".into(),
            )),
            Ok(None) => Err(ServerError::Canceled(
                "canceling statement due to user request".into(),
            )),
            Err(e) => Err(PlanError::Internal(format!("pull query task failed: {e}")).into()),
        }
    }

    fn show(&self, what: ShowWhat, extended: bool, sql: &str) -> Output {
        let catalog = self.brook.catalog();
        match what {
            ShowWhat::Streams | ShowWhat::Tables => {
                let kind = if what == ShowWhat::Streams {
                    SourceKind::Stream
                } else {
                    SourceKind::Table
                };
                let defs: Vec<&SourceDef> = catalog
                    .sources
                    .values()
                    .filter(|d| d.kind == kind)
                    .collect();
                let title = if kind == SourceKind::Stream {
                    "Stream Name"
                } else {
                    "Table Name"
                };
                let rows: Vec<Vec<String>> = defs
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.topic.clone(),
                            d.key_format.name().into(),
                            d.value_format.name().into(),
                            "false".into(),
                        ]
                    })
                    .collect();
                let list: Vec<serde_json::Value> = defs
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "type": if kind == SourceKind::Stream { "STREAM" } else { "TABLE" },
                            "name": d.name, "topic": d.topic, "keyFormat": d.key_format.name(),
                            "valueFormat": d.value_format.name(), "isWindowed": false,
                        })
                    })
                    .collect();
                let key = if kind == SourceKind::Stream {
                    "streams"
                } else {
                    "tables"
                };
                listing(
                    &[
                        title,
                        "Kafka Topic",
                        "Key Format",
                        "Value Format",
                        "Windowed",
                    ],
                    rows,
                    serde_json::json!({"@type": key, "statementText": sql, key: list, "warnings": []}),
                )
            }
            ShowWhat::Queries => {
                let status = self.brook.engine.query_status();
                let mut rows = Vec::new();
                let mut list = Vec::new();
                for q in catalog.queries.values() {
                    let state = match status.get(&q.id) {
                        _ if q.paused => "PAUSED",
                        Some(None) => "RUNNING",
                        Some(Some(_)) => "ERROR",
                        None => "NOT_RUNNING",
                    };
                    let topic = catalog
                        .sources
                        .get(&q.sink)
                        .map_or(String::new(), |s| s.topic.clone());
                    rows.push(vec![
                        q.id.clone(),
                        "PERSISTENT".into(),
                        state.into(),
                        q.sink.clone(),
                        topic.clone(),
                        q.sql.clone(),
                    ]);
                    list.push(serde_json::json!({
                        "queryString": q.sql, "sinks": [q.sink], "sinkKafkaTopics": [topic], "id": q.id,
                        "statusCount": {state: 1}, "queryType": "PERSISTENT", "state": state,
                    }));
                }
                listing(
                    &[
                        "Query ID",
                        "Query Type",
                        "Status",
                        "Sink Name",
                        "Sink Kafka Topic",
                        "Query String",
                    ],
                    rows,
                    serde_json::json!({"@type": "queries", "statementText": sql, "queries": list, "warnings": []}),
                )
            }
            ShowWhat::Topics if extended => self.show_topics_extended(sql),
            ShowWhat::Topics => {
                let topics = user_topics(self.brook.engine.log());
                let rows = topics
                    .iter()
                    .map(|(n, p)| vec![n.clone(), p.to_string()])
                    .collect();
                let list: Vec<serde_json::Value> = topics
                    .iter()
                    .map(|(n, p)| serde_json::json!({"name": n, "replicaInfo": vec![1; *p as usize]}))
                    .collect();
                listing(
                    &["Kafka Topic", "Partitions"],
                    rows,
                    serde_json::json!({"@type": "kafka_topics", "statementText": sql, "topics": list, "warnings": []}),
                )
            }
            ShowWhat::Functions => show_functions(sql),
            ShowWhat::Variables => {
                let rows = self
                    .variables
                    .iter()
                    .map(|(n, v)| vec![n.clone(), v.clone()])
                    .collect();
                let list: Vec<serde_json::Value> = self
                    .variables
                    .iter()
                    .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                    .collect();
                listing(
                    &["Variable Name", "Value"],
                    rows,
                    serde_json::json!({"@type": "variables", "statementText": sql, "variables": list, "warnings": []}),
                )
            }
            ShowWhat::Types => {
                let catalog = self.brook.catalog();
                let rows = catalog
                    .types
                    .iter()
                    .map(|(n, t)| vec![n.clone(), t.to_string()])
                    .collect();
                let types: serde_json::Map<String, serde_json::Value> = catalog
                    .types
                    .iter()
                    .map(|(n, t)| {
                        (
                            n.clone(),
                            serde_json::json!({"type": t.base_name(), "schema": t.to_string()}),
                        )
                    })
                    .collect();
                listing(
                    &["Type Name", "Schema"],
                    rows,
                    serde_json::json!({"@type": "type_list", "statementText": sql, "types": types, "warnings": []}),
                )
            }
            ShowWhat::Properties => {
                let rows: Vec<Vec<String>> = self
                    .properties
                    .iter()
                    .map(|(k, v)| vec![k.clone(), "SESSION".into(), v.clone()])
                    .collect();
                let list: Vec<serde_json::Value> = self
                    .properties
                    .iter()
                    .map(|(k, v)| serde_json::json!({"name": k, "scope": "SESSION", "value": v}))
                    .collect();
                listing(
                    &["Property", "Scope", "Value"],
                    rows,
                    serde_json::json!({"@type": "properties", "statementText": sql, "properties": list, "overwrittenProperties": [], "defaultProperties": [], "warnings": []}),
                )
            }
        }
    }

    /// `EXPLAIN`: the steps of a persistent query, or of a query statement
    /// planned against the current catalog without running it.
    fn explain(&self, target: &parser::ExplainTarget, sql: &str) -> Result<Output> {
        let catalog = self.brook.catalog().clone();
        let (query_sql, lines) = match target {
            parser::ExplainTarget::Query(id) => {
                let q = catalog.queries.get(id).ok_or_else(|| PlanError::NotFound {
                    kind: "query",
                    name: id.clone(),
                })?;
                let plan = self
                    .brook
                    .plans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .cloned()
                    .ok_or_else(|| PlanError::Internal(format!("no plan for query {id}")))?;
                let mut lines = plan.explain(Some(&q.sink));
                if plan.window.is_some() {
                    if let Some(late) = self.brook.engine.late_records(id) {
                        lines.push(format!("Late records dropped: {late}"));
                    }
                }
                (q.sql.clone(), lines)
            }
            parser::ExplainTarget::Statement(statement) => {
                let lines = match statement.as_ref() {
                    Statement::Select {
                        query,
                        partition_by,
                        emit: Some(_),
                    } => plan_stream(&catalog, query, partition_by.as_deref(), None)?.explain(None),
                    Statement::Select { query, .. } => {
                        let plan = plan_pull(&catalog, query)?;
                        let text = plan.plan.display_indent().to_string();
                        text.lines().map(str::to_string).collect()
                    }
                    Statement::CreateAsSelect {
                        kind,
                        name,
                        props,
                        query,
                        partition_by,
                        emit,
                        ..
                    } => {
                        let (_, plan) = plan_create_as_select(
                            &catalog,
                            *kind,
                            name,
                            props,
                            query,
                            partition_by.as_deref(),
                            "EXPLAIN",
                            *emit == Some(Emit::Final),
                        )?;
                        plan.explain(Some(name))
                    }
                    Statement::InsertSelect {
                        target,
                        query,
                        partition_by,
                    } => {
                        let (_, plan) =
                            plan_insert_select(&catalog, target, query, partition_by.as_deref())?;
                        plan.explain(Some(target))
                    }
                    _ => {
                        return Err(PlanError::Invalid(
                            "EXPLAIN takes a query id or a query statement".into(),
                        )
                        .into())
                    }
                };
                (String::new(), lines)
            }
        };
        let rows = lines.iter().map(|l| vec![l.clone()]).collect();
        Ok(listing(
            &["Plan"],
            rows,
            serde_json::json!({"@type": "queryDescription", "statementText": sql,
                "queryDescription": {"statementText": query_sql, "executionPlan": lines.join("\n")},
                "warnings": []}),
        ))
    }

    fn describe(&self, name: &str, sql: &str) -> Result<Output> {
        let catalog = self.brook.catalog();
        let def = catalog.source(name)?;
        let mut rows = Vec::new();
        let mut fields = Vec::new();
        for c in &def.columns {
            let key = match (&c.header, c.key, def.kind) {
                (Some(HeaderSource::All), ..) => " (headers)".to_string(),
                (Some(HeaderSource::Key(k)), ..) => format!(" (header('{k}'))"),
                (None, true, SourceKind::Stream) => " (key)".to_string(),
                (None, true, SourceKind::Table) => " (primary key)".to_string(),
                _ => String::new(),
            };
            rows.push(vec![c.name.clone(), format!("{}{key}", c.ty)]);
            let mut f = serde_json::json!({"name": c.name, "schema": {"type": c.ty.to_string(), "fields": null, "memberSchema": null}});
            if c.key {
                f["type"] = "KEY".into();
            }
            fields.push(f);
        }
        let kind = if def.kind == SourceKind::Stream {
            "STREAM"
        } else {
            "TABLE"
        };
        let readers: Vec<&str> = catalog
            .readers_of(&def.name)
            .iter()
            .map(|q| q.id.as_str())
            .collect();
        let entity = serde_json::json!({
            "@type": "sourceDescription", "statementText": sql,
            "sourceDescription": {
                "name": def.name, "type": kind, "fields": fields, "topic": def.topic,
                "keyFormat": def.key_format.name(), "valueFormat": def.value_format.name(),
                "partitions": def.partitions, "replication": 1, "timestamp": def.timestamp_column.clone().unwrap_or_default(),
                "windowType": "", "statement": "", "readQueries": readers,
                "writeQueries": def.query_id.iter().collect::<Vec<_>>(), "extended": false,
            },
            "warnings": [],
        });
        Ok(listing(&["Field", "Type"], rows, entity))
    }
}

impl Brook {
    /// Runs a DDL statement: validate against a copy of the catalog, do the
    /// side effects, persist the command, then publish the new catalog.
    async fn execute_ddl(
        self: &Arc<Self>,
        parsed: Parsed,
        properties: &BTreeMap<String, String>,
    ) -> Result<Output> {
        let _guard = self.ddl.lock().await;
        let catalog = self.catalog().clone();
        let seq = self.engine.catalog_store().next_seq()?;
        let output = match &parsed.statement {
            Statement::CreateSource {
                kind,
                name,
                if_not_exists,
                ..
            }
            | Statement::CreateAsSelect {
                kind,
                name,
                if_not_exists,
                ..
            } => {
                let replace_source = match &parsed.statement {
                    Statement::CreateSource {
                        or_replace, source, ..
                    } => {
                        *or_replace
                            && (*source || catalog.sources.get(name).is_some_and(|d| d.read_only))
                    }
                    Statement::CreateAsSelect { or_replace, .. } => {
                        *or_replace && catalog.sources.get(name).is_some_and(|d| d.read_only)
                    }
                    _ => false,
                };
                if replace_source {
                    return Err(PlanError::Invalid(format!(
                        "Cannot add {} '{name}': CREATE OR REPLACE is not supported on source {}s.",
                        kind.noun(),
                        kind.noun()
                    ))
                    .into());
                }
                let or_replace = matches!(
                    &parsed.statement,
                    Statement::CreateSource {
                        or_replace: true,
                        ..
                    } | Statement::CreateAsSelect {
                        or_replace: true,
                        ..
                    }
                );
                let replacing = or_replace && catalog.sources.contains_key(name);
                if let Some(existing) = catalog.sources.get(name).filter(|_| !replacing) {
                    if *if_not_exists {
                        return Ok(Output::Command {
                            tag: format!("CREATE {}", kind.noun().to_uppercase()),
                            message: format!(
                                "A {} named {name} already exists; nothing was changed.",
                                existing.kind.noun()
                            ),
                            query_id: None,
                        });
                    }
                    return Err(PlanError::AlreadyExists {
                        kind: existing.kind.noun(),
                        name: name.clone(),
                    }
                    .into());
                }
                let mut next = catalog.clone();
                let created = blocking(|| apply_ddl(&mut next, &parsed, seq, properties, None))?;
                let def = next.source(name)?.clone();
                let topic_use = match parsed.statement {
                    Statement::CreateAsSelect { .. } => TopicUse::Write,
                    _ => TopicUse::Declare,
                };
                access::check(&def.topic, topic_use)?;
                if let Some(p) = self.engine.topic_partitions(&def.topic) {
                    if p != def.partitions
                        && matches!(parsed.statement, Statement::CreateSource { .. })
                    {
                        let wants = parsed_has_partitions(&parsed);
                        if wants {
                            return Err(PlanError::Invalid(format!(
                                "A Kafka topic with the name '{}' already exists, with different partition count: {p} (wanted {})",
                                def.topic, def.partitions
                            ))
                            .into());
                        }
                    }
                }
                let mut def = def;
                if let Some(p) = self.engine.topic_partitions(&def.topic) {
                    def.partitions = p;
                    next.sources.insert(def.name.clone(), def.clone());
                }
                self.engine.ensure_topic(&def)?;
                if !replacing {
                    // Rows a crash left behind from an earlier table of this name.
                    self.engine.drop_materialization(&def.name)?;
                }
                self.persist_create(seq, &parsed.sql, properties, def.partitions)?;
                let query = def.query_id.clone();
                let paused = query
                    .as_ref()
                    .and_then(|q| next.queries.get(q))
                    .is_some_and(|q| q.paused);
                *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = next;
                if let Some((id, plan)) = created {
                    if replacing {
                        // The upgraded query goes on from where the old one stopped.
                        self.engine.pause_query(&id).await;
                    }
                    if paused {
                        self.remember_plan(&id, plan);
                    } else {
                        self.start_query(&id, plan)?;
                    }
                }
                match &query {
                    Some(id) => Output::Command {
                        tag: format!("CREATE {}", kind.noun().to_uppercase()),
                        message: format!("Created query with ID {id}"),
                        query_id: query,
                    },
                    None => Output::Command {
                        tag: format!("CREATE {}", kind.noun().to_uppercase()),
                        message: format!(
                            "{} created",
                            if *kind == SourceKind::Stream {
                                "Stream"
                            } else {
                                "Table"
                            }
                        ),
                        query_id: None,
                    },
                }
            }
            Statement::Alter { kind, .. } => {
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                Output::Command {
                    tag: format!("ALTER {}", kind.noun().to_uppercase()),
                    message: format!(
                        "{} altered.",
                        if *kind == SourceKind::Stream {
                            "Stream"
                        } else {
                            "Table"
                        }
                    ),
                    query_id: None,
                }
            }
            Statement::CreateType { name, ty, .. } => {
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                let resolved = self
                    .catalog()
                    .types
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| ty.clone());
                Output::Command {
                    tag: "CREATE TYPE".into(),
                    message: format!(
                        "Registered custom type with name '{name}' and SQL type {resolved}"
                    ),
                    query_id: None,
                }
            }
            Statement::DropType { name, .. } => {
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                Output::Command {
                    tag: "DROP TYPE".into(),
                    message: format!("Dropped type '{name}'"),
                    query_id: None,
                }
            }
            Statement::InsertSelect { target, .. } => {
                if let Some(def) = catalog.sources.get(target) {
                    access::check(&def.topic, TopicUse::Write)?;
                }
                let created = self.commit_ddl(&catalog, &parsed, seq, properties)?;
                let id = format!("INSERTQUERY_{seq}");
                if let Some((id, plan)) = created {
                    self.start_query(&id, plan)?;
                }
                Output::Command {
                    tag: "INSERT 0 0".into(),
                    message: format!("Created query with ID {id}"),
                    query_id: Some(id),
                }
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                let Some(def) = catalog.sources.get(name) else {
                    if *if_exists {
                        return Ok(Output::Command {
                            tag: format!("DROP {}", kind.noun().to_uppercase()),
                            message: format!("Source {name} does not exist."),
                            query_id: None,
                        });
                    }
                    return Err(PlanError::NotFound {
                        kind: kind.noun(),
                        name: name.clone(),
                    }
                    .into());
                };
                if def.kind != *kind {
                    return Err(PlanError::Invalid(format!(
                        "Incompatible data source type is {}, but statement was DROP {}",
                        def.kind.noun().to_uppercase(),
                        kind.noun().to_uppercase()
                    ))
                    .into());
                }
                let readers: Vec<String> = catalog
                    .readers_of(name)
                    .iter()
                    .map(|q| q.id.clone())
                    .collect();
                let writers: Vec<String> = catalog
                    .queries
                    .values()
                    .filter(|q| q.sink == *name && Some(&q.id) != def.query_id.as_ref())
                    .map(|q| q.id.clone())
                    .collect();
                if !writers.is_empty() {
                    return Err(PlanError::InUse(format!(
                        "Cannot drop {name}.\nThe following queries write into this source: [{}].\nYou need to terminate them before dropping {name}.",
                        writers.join(", ")
                    ))
                    .into());
                }
                if !readers.is_empty() {
                    return Err(PlanError::InUse(format!(
                        "Cannot drop {name}.\nThe following queries read from this source: [{}].\nYou need to terminate them before dropping {name}.",
                        readers.join(", ")
                    ))
                    .into());
                }
                if *delete_topic && def.read_only {
                    return Err(PlanError::Invalid(format!(
                        "Cannot delete topic for read-only source: {name}"
                    ))
                    .into());
                }
                if *delete_topic {
                    access::check(&def.topic, TopicUse::Delete)?;
                    let sharing: Vec<&str> = catalog
                        .sources
                        .values()
                        .filter(|s| s.name != *name && s.topic == def.topic)
                        .map(|s| s.name.as_str())
                        .collect();
                    if !sharing.is_empty() {
                        return Err(PlanError::InUse(format!(
                            "Cannot delete topic {} of {name}: it is also used by {}.",
                            def.topic,
                            sharing.join(", ")
                        ))
                        .into());
                    }
                }
                let def = def.clone();
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                if let Some(q) = &def.query_id {
                    self.engine.terminate_query(q).await?;
                }
                self.engine.drop_materialization(&def.name)?;
                if *delete_topic {
                    self.engine.delete_topic(&def.topic)?;
                }
                Output::Command {
                    tag: format!("DROP {}", kind.noun().to_uppercase()),
                    message: format!("Source `{name}` (topic: {}) was dropped.", def.topic),
                    query_id: None,
                }
            }
            Statement::Terminate { id } => {
                let ids = query_ids(&catalog, id.as_deref())?;
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                for q in &ids {
                    self.engine.terminate_query(q).await?;
                    self.plans
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(q);
                }
                Output::Command {
                    tag: "TERMINATE".into(),
                    message: "Query terminated.".into(),
                    query_id: None,
                }
            }
            Statement::PauseResume { id, pause } => {
                let ids = query_ids(&catalog, id.as_deref())?;
                self.commit_ddl(&catalog, &parsed, seq, properties)?;
                for q in &ids {
                    if *pause {
                        self.engine.pause_query(q).await;
                    } else if !self.engine.is_running(q) {
                        let plan = self
                            .plans
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(q)
                            .cloned()
                            .ok_or_else(|| PlanError::Internal(format!("no plan for query {q}")))?;
                        self.start_query(q, plan)?;
                    }
                }
                let (tag, verb) = if *pause {
                    ("PAUSE", "paused")
                } else {
                    ("RESUME", "resumed")
                };
                Output::Command {
                    tag: tag.into(),
                    message: format!("Query {verb}."),
                    query_id: None,
                }
            }
            _ => return Err(PlanError::Internal("not a DDL statement".into()).into()),
        };
        Ok(output)
    }

    /// Applies a DDL statement to a copy of `catalog` (which validates it),
    /// persists the statement, then publishes the new catalog. Returns the
    /// query the statement creates, if any.
    fn commit_ddl(
        &self,
        catalog: &Catalog,
        parsed: &Parsed,
        seq: u64,
        properties: &BTreeMap<String, String>,
    ) -> Result<Option<(String, StreamPlan)>> {
        let mut next = catalog.clone();
        let created = blocking(|| apply_ddl(&mut next, parsed, seq, properties, None))?;
        self.persist(seq, &parsed.sql, properties)?;
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(created)
    }

    fn persist(&self, seq: u64, sql: &str, properties: &BTreeMap<String, String>) -> Result<()> {
        self.write_command(
            seq,
            CatalogCommand {
                sql: sql.to_string(),
                properties: properties.clone(),
                partitions: None,
                dropped: None,
            },
        )
    }

    fn persist_create(
        &self,
        seq: u64,
        sql: &str,
        properties: &BTreeMap<String, String>,
        partitions: u32,
    ) -> Result<()> {
        self.write_command(
            seq,
            CatalogCommand {
                sql: sql.to_string(),
                properties: properties.clone(),
                partitions: Some(partitions),
                dropped: None,
            },
        )
    }

    fn write_command(&self, seq: u64, command: CatalogCommand) -> Result<()> {
        let cmd = serde_json::to_vec(&command)
            .map_err(|e| PlanError::Internal(format!("catalog command {seq}: {e}")))?;
        self.engine.catalog_store().append(seq, &cmd)?;
        Ok(())
    }
}

fn parsed_has_partitions(parsed: &Parsed) -> bool {
    match &parsed.statement {
        Statement::CreateSource { props, .. } => props.iter().any(|(n, _)| n == "PARTITIONS"),
        _ => false,
    }
}

/// Schema metadata of pull results: [`KEY_FIELD`] marks the key columns of
/// a table read by a pull query, and [`PULL_SOURCE_KIND`] says whether the
/// query read a table (for ksqlDB's `/query` responses).
fn annotate_pull_schema(schema: &SchemaRef, table: Option<&SourceDef>) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let is_key = table.is_some_and(|t| t.key_columns().any(|c| c.name == *f.name()));
            let field = f.as_ref().clone();
            if is_key {
                field.with_metadata([(KEY_FIELD.to_string(), "true".to_string())].into())
            } else {
                field
            }
        })
        .collect();
    let kind = if table.is_some() { "table" } else { "stream" };
    Arc::new(Schema::new_with_metadata(
        fields,
        [(PULL_SOURCE_KIND.to_string(), kind.to_string())].into(),
    ))
}

/// Field metadata key marking a key column in query results.
pub const KEY_FIELD: &str = "brook.key";
/// Schema metadata key: `table` or `stream`, what a pull query read.
pub const PULL_SOURCE_KIND: &str = "brook.pull_source";

/// Topics users see: Brook's internal ones (`_brook_…`) are hidden.
fn user_topics(log: &brook_storage::LogStore) -> Vec<(String, u32)> {
    log.topics()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("_brook_"))
        .collect()
}

impl Session {
    /// `SHOW TOPICS EXTENDED`: per topic its offsets, size, settings and
    /// what recovery did to it when the log was opened.
    fn show_topics_extended(&self, sql: &str) -> Output {
        use brook_storage::{CleanupPolicy, RecoveryAction};
        let log = self.brook.engine.log();
        let mut rows = Vec::new();
        let mut list = Vec::new();
        for (name, partitions) in user_topics(log) {
            let (Ok(stats), Ok(config)) = (log.stats(&name), log.topic_config(&name)) else {
                continue;
            };
            let join = |f: &dyn Fn(&brook_storage::PartitionStats) -> String| {
                stats.iter().map(f).collect::<Vec<_>>().join(",")
            };
            let mut recovered = Vec::new();
            for r in log.recovery_reports().iter().filter(|r| r.topic == name) {
                recovered.push(match &r.action {
                    RecoveryAction::TailCut {
                        bytes_dropped,
                        position,
                        reason,
                    } => format!(
                        "partition {}: cut {bytes_dropped} bytes at {position} of {} ({reason})",
                        r.partition,
                        r.file.display()
                    ),
                    RecoveryAction::IndexRebuilt => format!(
                        "partition {}: rebuilt index of {}",
                        r.partition,
                        r.file.display()
                    ),
                    RecoveryAction::EndAdvanced { from, to } => format!(
                        "partition {}: end moved from {from} to {to} past offsets a torn tail took",
                        r.partition
                    ),
                });
            }
            let failed: Vec<String> = stats
                .iter()
                .enumerate()
                .filter_map(|(p, s)| s.failed.as_ref().map(|f| format!("partition {p}: {f}")))
                .collect();
            let retention = match (config.retention_ms, config.retention_bytes) {
                (None, None) => "forever".to_string(),
                (ms, bytes) => [
                    ms.map(|m| format!("{m} ms")),
                    bytes.map(|b| format!("{b} bytes")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            };
            let cleanup = match config.cleanup_policy {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
            };
            let bytes: u64 = stats.iter().map(|s| s.bytes).sum();
            rows.push(vec![
                name.clone(),
                partitions.to_string(),
                join(&|s| s.start_offset.to_string()),
                join(&|s| s.end_offset.to_string()),
                join(&|s| s.segments.to_string()),
                bytes.to_string(),
                retention.clone(),
                cleanup.to_string(),
                recovered.join("; "),
                failed.join("; "),
            ]);
            list.push(serde_json::json!({
                "name": name, "replicaInfo": vec![1; partitions as usize],
                "startOffsets": stats.iter().map(|s| s.start_offset).collect::<Vec<_>>(),
                "endOffsets": stats.iter().map(|s| s.end_offset).collect::<Vec<_>>(),
                "segments": stats.iter().map(|s| s.segments).collect::<Vec<_>>(),
                "bytes": bytes, "retention": retention, "cleanupPolicy": cleanup,
                "recovered": recovered, "failed": failed,
            }));
        }
        listing(
            &[
                "Kafka Topic",
                "Partitions",
                "Start Offsets",
                "End Offsets",
                "Segments",
                "Bytes",
                "Retention",
                "Cleanup Policy",
                "Recovered",
                "Failed",
            ],
            rows,
            serde_json::json!({"@type": "kafka_topics_extended", "statementText": sql, "topics": list, "warnings": []}),
        )
    }
}

/// `SHOW FUNCTIONS`: every built-in function, by name.
fn show_functions(sql: &str) -> Output {
    let mut functions: Vec<&FunctionInfo> = functions::FUNCTIONS.iter().collect();
    functions.sort_by_key(|f| f.name);
    let rows = functions
        .iter()
        .map(|f| {
            vec![
                f.name.to_string(),
                f.kind.name().to_string(),
                f.category.to_string(),
                f.signatures.join("; "),
            ]
        })
        .collect();
    let list: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "type": f.kind.name(), "category": f.category}))
        .collect();
    listing(
        &["Function Name", "Type", "Category", "Signatures"],
        rows,
        serde_json::json!({"@type": "function_names", "statementText": sql, "functions": list, "warnings": []}),
    )
}

/// `DESCRIBE FUNCTION name`: what it does and its variants.
fn describe_function(name: &str, sql: &str) -> Result<Output> {
    let f = functions::lookup(name).ok_or_else(|| {
        PlanError::Invalid(format!("Can't find any functions with the name '{name}'"))
    })?;
    let mut rows = vec![
        vec!["Name".to_string(), f.name.to_string()],
        vec!["Type".to_string(), f.kind.name().to_string()],
        vec!["Category".to_string(), f.category.to_string()],
        vec!["Description".to_string(), f.description.to_string()],
    ];
    for s in f.signatures {
        rows.push(vec!["Variation".to_string(), s.to_string()]);
    }
    let variants: Vec<serde_json::Value> = f
        .signatures
        .iter()
        .map(|s| serde_json::json!({"signature": s, "description": f.description}))
        .collect();
    Ok(listing(
        &["Property", "Value"],
        rows,
        serde_json::json!({
            "@type": "describe_function", "statementText": sql, "name": f.name,
            "description": f.description, "author": "Brook", "version": env!("CARGO_PKG_VERSION"),
            "path": "internal", "type": f.kind.name(), "functions": variants, "warnings": [],
        }),
    ))
}

fn listing(columns: &[&str], rows: Vec<Vec<String>>, entity: serde_json::Value) -> Output {
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| Some(r[i].clone())).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batches = match RecordBatch::try_new(Arc::clone(&schema), arrays) {
        Ok(b) => vec![b],
        Err(_) => Vec::new(),
    };
    Output::Listing {
        schema,
        batches,
        entity,
    }
}
