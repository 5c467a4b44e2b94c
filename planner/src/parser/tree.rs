//! What the parser produces: statements, their properties and columns.

use std::fmt;

use datafusion::sql::sqlparser::ast::{Expr, Query};

use crate::catalog::SourceKind;
use crate::types::SqlType;

/// A parsed statement and the text it came from.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The statement.
    pub statement: Statement,
    /// Its source text, without the terminating `;`.
    pub sql: String,
}

impl Statement {
    /// Whether it changes the catalog (DDL, `INSERT INTO … SELECT`, and
    /// the statements that stop, pause or resume persistent queries).
    pub fn changes_catalog(&self) -> bool {
        matches!(
            self,
            Statement::CreateSource { .. }
                | Statement::CreateAsSelect { .. }
                | Statement::Drop { .. }
                | Statement::Alter { .. }
                | Statement::Terminate { .. }
                | Statement::PauseResume { .. }
                | Statement::CreateType { .. }
                | Statement::DropType { .. }
                | Statement::InsertSelect { .. }
        )
    }
}

impl Parsed {
    /// Whether it is a query (`SELECT`, `COPY (…) TO STDOUT`, `PRINT`):
    /// it only reads, so a client may abandon it at any point.
    pub fn is_query(&self) -> bool {
        matches!(
            self.statement,
            Statement::Select { .. } | Statement::CopyTo { .. } | Statement::Print { .. }
        )
    }
}

/// A literal value in a `WITH (…)` property list or `SET`.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// `'text'`
    String(String),
    /// `42`
    Number(String),
    /// `true`
    Bool(bool),
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            PropValue::Number(n) => f.write_str(n),
            PropValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl PropValue {
    /// The value as text, without quotes.
    pub fn as_text(&self) -> String {
        match self {
            PropValue::String(s) | PropValue::Number(s) => s.clone(),
            PropValue::Bool(b) => b.to_string(),
        }
    }
}

/// `WITH (NAME=value, …)`, names upper-cased.
pub type Props = Vec<(String, PropValue)>;

/// A column in `CREATE STREAM|TABLE name (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Name (normalized).
    pub name: String,
    /// Declared type.
    pub ty: SqlType,
    /// `KEY` or `PRIMARY KEY`.
    pub key: bool,
    /// `PRIMARY KEY` was written (tables); `KEY` otherwise.
    pub primary: bool,
    /// `HEADERS` or `HEADER('k')`.
    pub header: Option<crate::catalog::HeaderSource>,
}

/// What `EMIT` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `EMIT CHANGES`: a push query.
    Changes,
    /// `EMIT FINAL`: a push query emitting closed windows only.
    Final,
}

/// `SHOW …` / `LIST …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// `SHOW STREAMS`
    Streams,
    /// `SHOW TABLES`
    Tables,
    /// `SHOW QUERIES`
    Queries,
    /// `SHOW TOPICS`
    Topics,
    /// `SHOW PROPERTIES`
    Properties,
    /// `SHOW FUNCTIONS`
    Functions,
    /// `SHOW TYPES`
    Types,
    /// `SHOW VARIABLES`
    Variables,
}

/// A Brook statement. [`crate::printer`] prints it back as ksqlDB text.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name (cols) [WITH (…)]`
    CreateSource {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
        /// `OR REPLACE`
        or_replace: bool,
        /// `SOURCE`: read-only (no INSERT, ALTER, DELETE TOPIC).
        source: bool,
        /// Declared columns.
        columns: Vec<ColumnSpec>,
        /// `WITH (…)`
        props: Props,
    },
    /// `CREATE STREAM|TABLE name [WITH (…)] AS SELECT …`
    CreateAsSelect {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
        /// `OR REPLACE`
        or_replace: bool,
        /// `WITH (…)`
        props: Props,
        /// The query (its `EMIT CHANGES`, if written, is dropped).
        query: Box<Query>,
        /// `PARTITION BY` expressions: the key of the result.
        partition_by: Option<Vec<Expr>>,
        /// `EMIT FINAL` (a windowed aggregation's final results only).
        emit: Option<Emit>,
    },
    /// `INSERT INTO name [(cols)] VALUES (…), …`
    InsertValues {
        /// Target stream or table.
        target: String,
        /// Column list, empty for all columns in order.
        columns: Vec<String>,
        /// Rows of expressions.
        rows: Vec<Vec<Expr>>,
    },
    /// `INSERT INTO stream SELECT …`: a persistent query writing into an
    /// existing stream.
    InsertSelect {
        /// Target stream.
        target: String,
        /// The query.
        query: Box<Query>,
        /// `PARTITION BY` expressions.
        partition_by: Option<Vec<Expr>>,
    },
    /// `SELECT …`: push with `EMIT CHANGES`, pull otherwise.
    Select {
        /// The query, without `EMIT`.
        query: Box<Query>,
        /// `EMIT CHANGES` / `EMIT FINAL`.
        emit: Option<Emit>,
        /// `PARTITION BY` expressions.
        partition_by: Option<Vec<Expr>>,
    },
    /// `COPY (SELECT …) TO STDOUT`
    CopyTo {
        /// The query, without `EMIT`.
        query: Box<Query>,
        /// `EMIT CHANGES` / `EMIT FINAL`.
        emit: Option<Emit>,
    },
    /// `SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS|PROPERTIES [EXTENDED]`
    Show {
        /// What to list.
        what: ShowWhat,
        /// `EXTENDED`
        extended: bool,
    },
    /// `DESCRIBE FUNCTION name`
    DescribeFunction {
        /// The function's name.
        name: String,
    },
    /// `DESCRIBE [EXTENDED] name`
    Describe {
        /// Name.
        name: String,
        /// `EXTENDED`
        extended: bool,
    },
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`
    Drop {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF EXISTS`
        if_exists: bool,
        /// `DELETE TOPIC`
        delete_topic: bool,
    },
    /// `CREATE TYPE [IF NOT EXISTS] name AS type`
    CreateType {
        /// The type's name.
        name: String,
        /// What it stands for.
        ty: SqlType,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
    },
    /// `DROP TYPE [IF EXISTS] name`
    DropType {
        /// The type's name.
        name: String,
        /// `IF EXISTS`
        if_exists: bool,
    },
    /// `ALTER STREAM|TABLE name ADD [COLUMN] col type, …`
    Alter {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// The value columns added.
        columns: Vec<ColumnSpec>,
    },
    /// `TERMINATE id` / `TERMINATE ALL`
    Terminate {
        /// The query id, or `None` for `ALL`.
        id: Option<String>,
    },
    /// `EXPLAIN query_id` / `EXPLAIN statement`
    Explain {
        /// What to explain.
        target: ExplainTarget,
    },
    /// `PAUSE id|ALL` / `RESUME id|ALL`
    PauseResume {
        /// The query id, or `None` for `ALL`.
        id: Option<String>,
        /// `PAUSE` (true) or `RESUME`.
        pause: bool,
    },
    /// `FLUSH`: wait until every persistent query has processed everything
    /// appended before.
    Flush,
    /// `SET 'name' = 'value'`
    Set {
        /// Property name.
        name: String,
        /// Value.
        value: String,
    },
    /// `UNSET 'name'`
    Unset {
        /// Property name.
        name: String,
    },
    /// `DEFINE name = 'value'`: a session variable, used as `${name}`.
    Define {
        /// Variable name (upper case unless quoted).
        name: String,
        /// Its text.
        value: String,
    },
    /// `UNDEFINE name`
    Undefine {
        /// Variable name.
        name: String,
    },
    /// `PRINT 'topic' [FROM BEGINNING] [INTERVAL|SAMPLE n] [LIMIT n]`
    Print {
        /// The topic (as written when quoted, upper-cased otherwise).
        topic: String,
        /// Start at the oldest record instead of the end.
        from_beginning: bool,
        /// Print every n-th record.
        interval: u64,
        /// Stop after this many records.
        limit: Option<u64>,
    },
}

/// What `EXPLAIN` explains.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainTarget {
    /// A persistent query, by id.
    Query(String),
    /// A query statement, planned but not run.
    Statement(Box<Statement>),
}
