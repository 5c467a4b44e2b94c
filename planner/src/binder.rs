//! The binder: statements + catalog → source definitions, stream plans,
//! pull plans and insert rows.
//!
//! Queries are planned by DataFusion's SQL planner against placeholder
//! tables that carry each source's schema, then analyzed (type coercion).
//! Continuous queries are lowered from that logical plan into a
//! [`StreamPlan`]; pull queries keep the logical plan.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ScalarValue, SchemaError, TableReference};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self, visit_relations, Ident, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    UnaryOperator, Value,
};

use crate::catalog::{
    Catalog, Column, Format, HeaderSource, SourceDef, SourceKind, WindowKind, WindowSpec,
    ROWOFFSET, ROWPARTITION, ROWTIME, WINDOWEND, WINDOWSTART,
};
use crate::error::{PlanError, Result};
use crate::parser::{object_name, ColumnSpec, PropValue, Props};
use crate::plan::{AggCall, AggFunc, ByOffsetArgs, PullPlan, StreamOp, StreamPlan, TableFunc};
use crate::types::SqlType;

/// Properties accepted in `WITH (…)`; others are an error.
const KNOWN_PROPS: &[&str] = &[
    "KAFKA_TOPIC",
    "VALUE_FORMAT",
    "KEY_FORMAT",
    "FORMAT",
    "PARTITIONS",
    "REPLICAS",
    "TIMESTAMP",
    "TIMESTAMP_FORMAT",
    "RETENTION_MS",
    "RETENTION_BYTES",
    "WRAP_SINGLE_VALUE",
    "VALUE_DELIMITER",
    "KEY_DELIMITER",
    "WINDOW_TYPE",
    "WINDOW_SIZE",
];

/// `WITH (WINDOW_TYPE='TUMBLING', WINDOW_SIZE='30 SECONDS')`: a source over
/// a topic with windowed keys (what a windowed aggregation writes).
fn window_prop(props: &Props) -> Result<Option<WindowSpec>> {
    let Some(kind) = prop(props, "WINDOW_TYPE") else {
        if prop(props, "WINDOW_SIZE").is_some() {
            return Err(PlanError::Invalid(
                "WINDOW_SIZE set without WINDOW_TYPE.".into(),
            ));
        }
        return Ok(None);
    };
    let kind = match kind.as_text().to_ascii_uppercase().as_str() {
        "TUMBLING" => WindowKind::Tumbling,
        "HOPPING" => WindowKind::Hopping,
        "SESSION" => WindowKind::Session,
        other => {
            return Err(PlanError::Invalid(format!(
                "Invalid WINDOW_TYPE: {other}. Valid values are SESSION, HOPPING and TUMBLING."
            )))
        }
    };
    let size = match prop(props, "WINDOW_SIZE") {
        Some(v) => {
            let text = v.as_text();
            let mut parts = text.split_whitespace();
            let ms = match (
                parts.next().and_then(|n| n.parse::<i64>().ok()),
                parts.next(),
                parts.next(),
            ) {
                (Some(n), Some(unit), None) => crate::functions::scalar::unit_ms(unit)
                    .ok()
                    .map(|u| n.saturating_mul(u)),
                _ => None,
            };
            ms.ok_or_else(|| {
                PlanError::Invalid(format!(
                    "Invalid WINDOW_SIZE '{text}': expected a number and a time unit, as in '30 SECONDS'"
                ))
            })?
        }
        None if kind == WindowKind::Session => 0,
        None => {
            return Err(PlanError::Invalid(
                "Tumbling and Hopping window types should set WINDOW_SIZE in the WITH clause."
                    .into(),
            ))
        }
    };
    Ok(Some(WindowSpec {
        kind,
        size_ms: size,
        advance_ms: size,
        grace_ms: 24 * 60 * 60 * 1000,
        retention_ms: None,
        grace_given: false,
    }))
}

fn prop<'a>(props: &'a Props, name: &str) -> Option<&'a PropValue> {
    props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn check_props(props: &Props) -> Result<()> {
    let unknown: Vec<&str> = props
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !KNOWN_PROPS.contains(n))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(PlanError::Invalid(format!(
            "Invalid config variable(s) in the WITH clause: {}",
            unknown.join(",")
        )))
    }
}

fn partitions_prop(props: &Props) -> Result<Option<u32>> {
    match prop(props, "PARTITIONS") {
        None => Ok(None),
        Some(v) => v
            .as_text()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .map(Some)
            .ok_or_else(|| {
                PlanError::Invalid(format!(
                    "invalid PARTITIONS {}: expected a number from 1 to 1024",
                    v
                ))
            }),
    }
}

/// A positive whole-number property (`RETENTION_MS`, `RETENTION_BYTES`).
fn positive_prop(props: &Props, name: &str) -> Result<Option<u64>> {
    match prop(props, name) {
        None => Ok(None),
        Some(v) => v
            .as_text()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && *n <= i64::MAX as u64)
            .map(Some)
            .ok_or_else(|| {
                PlanError::Invalid(format!("invalid {name} {v}: expected a positive number"))
            }),
    }
}

/// Key and value formats from `FORMAT`, `KEY_FORMAT`, `VALUE_FORMAT`.
fn formats(
    props: &Props,
    default_key: Format,
    default_value: Option<Format>,
) -> Result<(Format, Format)> {
    let both = prop(props, "FORMAT")
        .map(|v| Format::parse(&v.as_text()))
        .transpose()?;
    let key = prop(props, "KEY_FORMAT")
        .map(|v| Format::parse(&v.as_text()))
        .transpose()?;
    let value = prop(props, "VALUE_FORMAT")
        .map(|v| Format::parse(&v.as_text()))
        .transpose()?;
    for (given, name) in [
        (key.is_some(), "KEY_FORMAT"),
        (value.is_some(), "VALUE_FORMAT"),
    ] {
        if both.is_some() && given {
            return Err(PlanError::Invalid(format!(
                "Cannot supply both '{name}' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. \
                 Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'."
            )));
        }
    }
    let key = with_delimiter(key.or(both).unwrap_or(default_key), props, "KEY_DELIMITER")?;
    let value = value.or(both).or(default_value).ok_or_else(|| {
        PlanError::Invalid(
            "Statement is missing the 'VALUE_FORMAT' property from the WITH clause. Either provide one or set a default via the 'ksql.persistence.default.format.value' config.".into(),
        )
    })?;
    let value = with_delimiter(value, props, "VALUE_DELIMITER")?;
    let wrapped = matches!(
        prop(props, "WRAP_SINGLE_VALUE"),
        Some(PropValue::Bool(true))
    );
    if wrapped && matches!(value, Format::Delimited(_) | Format::Kafka) {
        return Err(PlanError::Invalid(format!(
            "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
            value.name()
        )));
    }
    Ok((key, value))
}

/// Applies `KEY_DELIMITER` / `VALUE_DELIMITER` (one character, or `TAB`
/// or `SPACE`) to a DELIMITED format; other formats refuse it.
fn with_delimiter(format: Format, props: &Props, name: &str) -> Result<Format> {
    let Some(v) = prop(props, name) else {
        return Ok(format);
    };
    let text = v.as_text();
    let invalid = |why: String| {
        PlanError::Invalid(format!(
            "Failed to prepare statement: Configuration {name} is invalid: {why}\nExample valid value: ';'"
        ))
    };
    let mut chars = text.chars();
    let delimiter = match (text.as_str(), chars.next(), chars.next()) {
        // Java trims the value: a lone space or tab is empty too.
        (t, _, _) if t.chars().all(|c| c <= ' ') => {
            return Err(invalid(
                "Delimiter cannot be empty, if you meant to have a tab or space for delimiter, please use the special values 'TAB' or 'SPACE'".into(),
            ))
        }
        ("TAB", _, _) => '\t',
        ("SPACE", _, _) => ' ',
        (_, Some(c), None) => c,
        (s, _, _) => {
            return Err(invalid(format!(
                "Invalid delimiter value: '{s}'. Delimiter must be a single character or TAB,SPACE"
            )))
        }
    };
    match format {
        Format::Delimited(_) => Ok(Format::Delimited(delimiter)),
        other => Err(PlanError::Invalid(format!(
            "{} does not support the following configs: [delimiter]",
            other.name()
        ))),
    }
}

/// Formats used when `WITH (…)` names none (ksqlDB's
/// `ksql.persistence.default.format.key` / `.value` configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatDefaults {
    /// Key format when none is given.
    pub key: Format,
    /// Value format when none is given; `None` makes `VALUE_FORMAT` required.
    pub value: Option<Format>,
}

impl Default for FormatDefaults {
    /// Brook's defaults: KAFKA keys, JSON values.
    fn default() -> Self {
        FormatDefaults {
            key: Format::Kafka,
            value: Some(Format::Json),
        }
    }
}

/// ksqlDB's checks of a schema against its key and value formats, in its
/// order and words: no MAP in keys, then what each format can serialize.
fn check_formats(key_format: Format, value_format: Format, columns: &[Column]) -> Result<()> {
    for c in columns.iter().filter(|c| c.key) {
        if c.ty.contains_map() {
            return Err(PlanError::Invalid(format!(
                "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{}`. Column type: {}. See https://github.com/confluentinc/ksql/issues/6621 for more.",
                c.name,
                c.ty.quoted()
            )));
        }
    }
    for (key, format) in [(true, key_format), (false, value_format)] {
        let part: Vec<&Column> = columns.iter().filter(|c| c.key == key).collect();
        if let Some(reason) = format_refusal(format, &part) {
            let schema = persistence_columns(&part);
            return Err(PlanError::Invalid(format!(
                "{} format does not support schema.\nformat: {}\nschema: Persistence{{columns=[{schema}], features=[]}}\nreason: {reason}",
                if key { "Key" } else { "Value" },
                format.name()
            )));
        }
    }
    Ok(())
}

/// Columns as ksqlDB prints a persistence schema: `` `A` INTEGER KEY, … ``.
fn persistence_columns(columns: &[&Column]) -> String {
    columns
        .iter()
        .map(|c| {
            format!(
                "`{}` {}{}",
                c.name,
                c.ty.quoted(),
                if c.key { " KEY" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `format` cannot serialize these columns, if it cannot.
fn format_refusal(format: Format, columns: &[&Column]) -> Option<String> {
    let unsupported = |c: &Column| {
        format!(
            "The '{}' format does not support type '{}', column: `{}`",
            format.name(),
            c.ty.base_name(),
            c.name
        )
    };
    match format {
        Format::Kafka => {
            if columns.len() > 1 {
                return Some(format!(
                    "The 'KAFKA' format only supports a single field. Got: [{}]",
                    persistence_columns(columns)
                ));
            }
            columns
                .iter()
                .find(|c| {
                    !matches!(
                        c.ty,
                        SqlType::Int
                            | SqlType::Bigint
                            | SqlType::Double
                            | SqlType::String
                            | SqlType::Bytes
                    )
                })
                .map(|c| unsupported(c))
        }
        Format::Delimited(_) => columns
            .iter()
            .find(|c| {
                matches!(
                    c.ty,
                    SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
                )
            })
            .map(|c| unsupported(c)),
        Format::None if !columns.is_empty() => Some(format!(
            "The 'NONE' format can only be used when no columns are defined. Got: [{}]",
            columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Format::Json => {
            fn non_string_key(t: &SqlType) -> bool {
                match t {
                    SqlType::Map(k, v) => **k != SqlType::String || non_string_key(v),
                    SqlType::Array(e) => non_string_key(e),
                    SqlType::Struct(fields) => fields.iter().any(|(_, t)| non_string_key(t)),
                    _ => false,
                }
            }
            columns
                .iter()
                .any(|c| non_string_key(&c.ty))
                .then(|| "JSON only supports MAP types with STRING keys".to_string())
        }
        _ => None,
    }
}

/// A declared column may not take a pseudo-column's name.
fn check_not_reserved(name: &str) -> Result<()> {
    if reserved(name) {
        return Err(PlanError::Invalid(format!(
            "'{name}' is a reserved column name. You cannot use it as a name for a column."
        )));
    }
    Ok(())
}

fn reserved(name: &str) -> bool {
    [ROWTIME, ROWPARTITION, ROWOFFSET, WINDOWSTART, WINDOWEND].contains(&name)
}

/// `CREATE STREAM|TABLE name (…) WITH (…)`.
pub fn plan_create_source(
    kind: SourceKind,
    name: &str,
    specs: &[ColumnSpec],
    props: &Props,
    defaults: FormatDefaults,
) -> Result<SourceDef> {
    check_props(props)?;
    // Formats are checked before columns, as ksqlDB does.
    formats(props, defaults.key, defaults.value)?;
    if specs.is_empty() {
        return Err(PlanError::Invalid(format!(
            "The statement does not define any columns: {} {name} needs a column list",
            kind.noun().to_uppercase()
        )));
    }
    let mut columns = Vec::with_capacity(specs.len());
    let mut seen = BTreeSet::new();
    for spec in specs {
        check_not_reserved(&spec.name)?;
        if !seen.insert(spec.name.clone()) {
            return Err(PlanError::Invalid(format!(
                "Duplicate column names: {}",
                spec.name
            )));
        }
        match (kind, spec.key, spec.primary) {
            (SourceKind::Stream, true, true) => {
                return Err(PlanError::Invalid(format!(
                    "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.",
                    spec.name
                )))
            }
            (SourceKind::Table, true, false) => {
                return Err(PlanError::Invalid(format!(
                    "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.",
                    spec.name
                )))
            }
            _ => {}
        }
        if let Some(h) = &spec.header {
            check_header_type(h, &spec.ty)?;
            if spec.key {
                return Err(PlanError::Invalid(format!(
                    "Column `{}` cannot be both a key and a header column.",
                    spec.name
                )));
            }
        }
        columns.push(Column {
            name: spec.name.clone(),
            ty: spec.ty.clone(),
            key: spec.key,
            header: spec.header.clone(),
        });
    }
    if kind == SourceKind::Table && !columns.iter().any(|c| c.key) {
        return Err(PlanError::Invalid(
            "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.".into(),
        ));
    }
    // Key columns first, each group in declaration order.
    columns.sort_by_key(|c| !c.key);
    let (key_format, value_format) = formats(props, defaults.key, defaults.value)?;
    let (key_format, keyless_format) = if columns.iter().any(|c| c.key) {
        (key_format, None)
    } else {
        (
            Format::None,
            Some(key_format).filter(|f| *f != Format::None),
        )
    };
    check_formats(key_format, value_format, &columns)?;
    let (timestamp_column, timestamp_format) = timestamp_prop(props, &columns)?;
    let unwrapped = unwrapped_prop(props, &columns)?;
    Ok(SourceDef {
        name: name.to_string(),
        kind,
        topic: prop(props, "KAFKA_TOPIC").map_or_else(|| name.to_string(), PropValue::as_text),
        partitions: partitions_prop(props)?.unwrap_or(1),
        key_format,
        value_format,
        timestamp_column,
        timestamp_format,
        columns,
        query_id: None,
        retention_ms: positive_prop(props, "RETENTION_MS")?.map(|n| n as i64),
        retention_bytes: positive_prop(props, "RETENTION_BYTES")?,
        keyless_format,
        unwrapped,
        read_only: false,
        window: window_prop(props)?,
    })
}

/// A `HEADERS` column is `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`; a
/// `HEADER('k')` column is BYTES.
fn check_header_type(h: &HeaderSource, ty: &SqlType) -> Result<()> {
    let all = SqlType::Array(Box::new(SqlType::Struct(vec![
        ("KEY".into(), SqlType::String),
        ("VALUE".into(), SqlType::Bytes),
    ])));
    match h {
        HeaderSource::All if *ty != all => Err(PlanError::Type(format!(
            "Invalid type for HEADERS column: expected {}, got {}",
            all.quoted(),
            ty.quoted()
        ))),
        HeaderSource::Key(k) if *ty != SqlType::Bytes => Err(PlanError::Type(format!(
            "Invalid type for HEADER('{k}') column: expected BYTES, got {}",
            ty.quoted()
        ))),
        _ => Ok(()),
    }
}

/// `WRAP_SINGLE_VALUE=false` for a source with one value column.
fn unwrapped_prop(props: &Props, columns: &[Column]) -> Result<bool> {
    if !matches!(
        prop(props, "WRAP_SINGLE_VALUE"),
        Some(PropValue::Bool(false))
    ) {
        return Ok(false);
    }
    if columns.iter().filter(|c| c.is_value()).count() != 1 {
        return Err(PlanError::Invalid(
            "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas".into(),
        ));
    }
    Ok(true)
}

/// `TIMESTAMP` and `TIMESTAMP_FORMAT`: the event-time column and the
/// pattern a STRING one is parsed with.
fn timestamp_prop(props: &Props, columns: &[Column]) -> Result<(Option<String>, Option<String>)> {
    let format = prop(props, "TIMESTAMP_FORMAT").map(PropValue::as_text);
    let Some(v) = prop(props, "TIMESTAMP") else {
        return Ok((None, None));
    };
    let text = v.as_text();
    let col = columns
        .iter()
        .find(|c| c.name == text)
        .or_else(|| columns.iter().find(|c| c.name == text.to_ascii_uppercase()))
        .ok_or_else(|| {
            PlanError::Invalid(format!(
                "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{}'",
                text.to_ascii_uppercase()
            ))
        })?;
    match (&col.ty, &format) {
        (SqlType::Bigint | SqlType::Timestamp, _) => Ok((Some(col.name.clone()), None)),
        (SqlType::String, Some(_)) => Ok((Some(col.name.clone()), format)),
        _ => Err(PlanError::Type(format!(
            "Timestamp column, `{}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp_format specified",
            col.name
        ))),
    }
}

/// The sources a query reads, in order of appearance.
fn referenced_sources<'c>(catalog: &'c Catalog, query: &Query) -> Result<Vec<&'c SourceDef>> {
    let mut names: Vec<String> = Vec::new();
    let mut err = None;
    let _ = visit_relations(query, |name| {
        match object_name(name) {
            Ok(n) => {
                if !names.contains(&n) {
                    names.push(n)
                }
            }
            Err(e) => err = Some(e),
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(e) = err {
        return Err(e);
    }
    names.iter().map(|n| catalog.source(n)).collect()
}

/// The planning session every statement starts from: its settings and
/// every function registered, built once (registering them all took most
/// of a pull query's time).
static PLANNING_STATE: std::sync::LazyLock<datafusion::execution::SessionState> =
    std::sync::LazyLock::new(|| {
        let mut cfg = SessionConfig::new();
        cfg.options_mut().sql_parser.enable_ident_normalization = false;
        cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(cfg);
        crate::functions::register(&ctx);
        ctx.state()
    });

fn planning_context(sources: &[&SourceDef]) -> Result<SessionContext> {
    use datafusion::catalog::{
        CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
        MemorySchemaProvider,
    };
    // A catalog of its own: a clone of the state shares the template's,
    // and with it every statement's tables.
    let mut state = PLANNING_STATE.clone();
    let names = &state.config().options().catalog;
    let schema = MemoryCatalogProvider::new();
    schema.register_schema(&names.default_schema, Arc::new(MemorySchemaProvider::new()))?;
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog(names.default_catalog.clone(), Arc::new(schema));
    state.register_catalog_list(Arc::new(catalogs));
    let ctx = SessionContext::new_with_state(state);
    for s in sources {
        ctx.register_table(
            TableReference::bare(s.name.as_str()),
            Arc::new(EmptyTable::new(s.batch_schema())),
        )?;
    }
    Ok(ctx)
}

/// ksqlDB's projection rules: `*` is the declared columns (no
/// pseudo-columns), and an unnamed expression is called `KSQL_COL_<n>`.
fn rewrite_projection(query: &mut Query, sources: &[&SourceDef]) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Unsupported(
            "only SELECT queries are supported here".into(),
        ));
    };
    let mut aliases: Vec<(String, String)> = Vec::new(); // alias → source name
    for twj in &select.from {
        if let ast::TableFactor::Table { name, alias, .. } = &twj.relation {
            let source = object_name(name)?;
            if let Some(a) = alias {
                aliases.push((a.name.value.clone(), source.clone()));
            }
            aliases.push((source.clone(), source));
        }
    }
    let mut generated = 0usize;
    let mut out = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                for s in sources {
                    out.extend(
                        s.columns.iter().map(|c| {
                            SelectItem::UnnamedExpr(ast::Expr::Identifier(quoted(&c.name)))
                        }),
                    );
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let qualifier = object_name(&name)?;
                let source = aliases
                    .iter()
                    .find(|(a, _)| *a == qualifier)
                    .and_then(|(_, s)| sources.iter().find(|d| d.name == *s))
                    .ok_or_else(|| PlanError::NotFound {
                        kind: "source",
                        name: qualifier.clone(),
                    })?;
                out.extend(source.columns.iter().map(|c| {
                    SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(vec![
                        quoted(&qualifier),
                        quoted(&c.name),
                    ]))
                }));
            }
            SelectItem::UnnamedExpr(expr) => match expr {
                ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => {
                    out.push(SelectItem::UnnamedExpr(expr))
                }
                other => {
                    // `s->f` is named after the field, as in ksqlDB.
                    let alias = match struct_field(&other) {
                        Some(field) => field,
                        None => {
                            generated += 1;
                            format!("KSQL_COL_{}", generated - 1)
                        }
                    };
                    out.push(SelectItem::ExprWithAlias {
                        expr: other,
                        alias: quoted(&alias),
                    });
                }
            },
            other => out.push(other),
        }
    }
    select.projection = out;
    Ok(())
}

fn quoted(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// ksqlDB's literal typing: an integer literal that fits in 32 bits is an
/// INT (DataFusion makes every integer literal a BIGINT). Only filters and
/// projections are rewritten: other nodes' expressions are referred to by
/// their generated names.
fn int_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::Operator;
    let out = plan.transform_up(|node| {
        if !matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Filter(_)) {
            return Ok(Transformed::no(node));
        }
        let node = node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Literal(ScalarValue::Int64(Some(v)), meta) if i32::try_from(v).is_ok() => Ok(
                    Transformed::yes(Expr::Literal(ScalarValue::Int32(Some(v as i32)), meta)),
                ),
                // ksqlDB compares like Java: with a NULL side the result is
                // false, not NULL.
                Expr::BinaryExpr(b)
                    if matches!(
                        b.op,
                        Operator::Eq
                            | Operator::NotEq
                            | Operator::Lt
                            | Operator::LtEq
                            | Operator::Gt
                            | Operator::GtEq
                    ) =>
                {
                    let both_literal = matches!(*b.left, Expr::Literal(..))
                        && matches!(*b.right, Expr::Literal(..));
                    if both_literal {
                        Ok(Transformed::no(Expr::BinaryExpr(b)))
                    } else {
                        Ok(Transformed::yes(Expr::IsTrue(Box::new(Expr::BinaryExpr(
                            b,
                        )))))
                    }
                }
                other => Ok(Transformed::no(other)),
            })
        })?;
        if node.transformed {
            Ok(Transformed::yes(node.data.recompute_schema()?))
        } else {
            Ok(node)
        }
    })?;
    Ok(out.data)
}

/// Plans a query with DataFusion: logical plan, analyzed.
fn logical_plan(query: &Query, sources: &[&SourceDef]) -> Result<LogicalPlan> {
    let mut query = query.clone();
    crate::ksql_ast::rewrite_ksql(&mut query)?;
    rewrite_projection(&mut query, sources)?;
    let ctx = planning_context(sources)?;
    let state = ctx.state();
    check_group_by(&query, &state)?;
    let stmt = DFStatement::Statement(Box::new(ast::Statement::Query(Box::new(query.clone()))));
    // Resolving placeholder tables does no I/O: the future completes at once.
    let plan = futures::executor::block_on(state.statement_to_plan(stmt))
        .map_err(|e| where_error(&query, &e).unwrap_or_else(|| plan_error(e)))?;
    let plan = int_literals(plan)?;
    check_comparisons(&plan)?;
    state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| where_error(&query, &e).unwrap_or_else(|| plan_error(e)))
}

/// ksqlDB's words for a WHERE clause that is not a boolean, or whose
/// arithmetic mixes types that do not add up.
fn where_error(query: &Query, e: &DataFusionError) -> Option<PlanError> {
    use crate::ksql_ast::{ksql_display, literal_type};
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let predicate = select.selection.as_ref()?;
    let text = e.to_string();
    if text.contains("Cannot create filter with non-boolean predicate") {
        let df_type = text.rsplit("returning ").next()?.trim();
        let ty = literal_type(predicate).map(str::to_string).or_else(|| {
            df_type
                .parse::<DataType>()
                .ok()
                .and_then(|t| SqlType::from_arrow(&t).ok())
                .map(|t| t.to_string())
        })?;
        return Some(PlanError::Type(format!(
            "Type error in WHERE expression: Should evaluate to boolean but is {} ({ty}) instead.",
            ksql_display(predicate)
        )));
    }
    if text.contains("Cannot coerce arithmetic expression") {
        // The first arithmetic between two literals of unlike types.
        let mut found = None;
        let _ = ast::visit_expressions(predicate, |e| {
            if let ast::Expr::BinaryOp { left, op, right } = e {
                let arithmetic = matches!(
                    op,
                    ast::BinaryOperator::Plus
                        | ast::BinaryOperator::Minus
                        | ast::BinaryOperator::Multiply
                        | ast::BinaryOperator::Divide
                        | ast::BinaryOperator::Modulo
                );
                if let (true, Some(l), Some(r)) =
                    (arithmetic, literal_type(left), literal_type(right))
                {
                    found = Some((ksql_display(e), l, r));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        let (expr, l, r) = found?;
        return Some(PlanError::Type(format!(
            "Error in WHERE expression: Error processing expression: {expr}. Unsupported arithmetic types. {l} {r}"
        )));
    }
    None
}

/// ksqlDB refuses aggregate functions in GROUP BY.
fn check_group_by(query: &Query, state: &datafusion::execution::SessionState) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Ok(());
    };
    let ast::GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Ok(());
    };
    let mut found = None;
    let _ = ast::visit_expressions(exprs, |e| {
        if let ast::Expr::Function(f) = e {
            let name = f.name.to_string();
            if state
                .aggregate_functions()
                .contains_key(&name.to_ascii_lowercase())
            {
                found = Some(name.to_ascii_uppercase());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(name) = found {
        return Err(PlanError::Invalid(format!(
            "GROUP BY does not support aggregate functions: {name} is an aggregate function."
        )));
    }
    if exprs.is_empty() {
        return Ok(());
    }
    if let Some(condition) = exprs.iter().find(|e| crate::parser::is_condition(e)) {
        // ksqlDB's grammar takes value expressions here, not conditions.
        return Err(PlanError::Syntax(format!(
            "Syntax Error: GROUP BY takes value expressions, not the condition {condition}"
        )));
    }
    let source = select
        .from
        .first()
        .and_then(|f| match &f.relation {
            ast::TableFactor::Table { name, .. } => object_name(name).ok(),
            _ => None,
        })
        .unwrap_or_default();
    let qualified = |e: &ast::Expr| match e {
        ast::Expr::Identifier(i) if !source.is_empty() => format!("{source}.{}", i.value),
        other => crate::ksql_ast::ksql_display(other),
    };
    let mut seen: Vec<String> = Vec::new();
    for e in exprs {
        let text = qualified(e);
        if seen.contains(&text) {
            return Err(PlanError::Invalid(format!(
                "Duplicate GROUP BY expression: {text}"
            )));
        }
        seen.push(text);
    }
    // ksqlDB's check, in its words: every non-aggregate part of a SELECT
    // item must be a GROUP BY expression or built from them.
    let unqualified = |e: &ast::Expr| {
        let mut e = e.clone();
        let _ = ast::visit_expressions_mut(&mut e, |x| {
            if let ast::Expr::CompoundIdentifier(parts) = x {
                if let [_, column] = parts.as_slice() {
                    *x = ast::Expr::Identifier(column.clone());
                }
            }
            ControlFlow::<()>::Continue(())
        });
        e
    };
    let groups: Vec<String> = exprs
        .iter()
        .map(|e| crate::ksql_ast::ksql_display(&unqualified(e)))
        .collect();
    let is_aggregate = |f: &ast::Function| {
        state
            .aggregate_functions()
            .contains_key(&f.name.to_string().to_ascii_lowercase())
    };
    // Without any aggregate, the error is that one (reported later).
    let mut any_aggregate = false;
    let _ = ast::visit_expressions(&select.projection, |x| {
        any_aggregate |= matches!(x, ast::Expr::Function(f) if is_aggregate(f));
        ControlFlow::<()>::Continue(())
    });
    let _ = ast::visit_expressions(&select.having, |x| {
        any_aggregate |= matches!(x, ast::Expr::Function(f) if is_aggregate(f));
        ControlFlow::<()>::Continue(())
    });
    // An unknown function is reported by planning (it may be an aggregate).
    let mut unknown = false;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            let name = f.name.to_string().to_ascii_lowercase();
            unknown |= !state.scalar_functions().contains_key(&name)
                && !state.aggregate_functions().contains_key(&name)
                && !state.higher_order_functions().contains_key(&name);
        }
        ControlFlow::<()>::Continue(())
    });
    if unknown {
        return Ok(());
    }
    if !any_aggregate {
        return Err(PlanError::Invalid(
            "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.".into(),
        ));
    }
    // Aggregates of aggregates.
    let mut nested = None;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            if is_aggregate(f) {
                let mut inner = false;
                let _ = ast::visit_expressions(&f.args, |y| {
                    inner |= !std::ptr::eq(x, y)
                        && matches!(y, ast::Expr::Function(g) if is_aggregate(g));
                    ControlFlow::<()>::Continue(())
                });
                if inner {
                    nested = Some(crate::ksql_ast::ksql_display(x));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(call) = nested {
        return Err(PlanError::Invalid(format!(
            "Aggregate functions can not be nested: {call}"
        )));
    }
    let mut offenders = Vec::new();
    for item in &select.projection {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let e = unqualified(e);
        let text = crate::ksql_ast::ksql_display(&e);
        if groups.contains(&text) {
            continue;
        }
        if uncovered(&e, &groups, &is_aggregate) {
            offenders.push(text);
        }
    }
    if !offenders.is_empty() {
        return Err(PlanError::Invalid(format!(
            "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
            offenders.join(", ")
        )));
    }
    Ok(())
}

/// The first window bound (`WINDOWSTART`, `WINDOWEND`) named in `node`.
fn window_bound_in<V: ast::Visit>(node: &V) -> Option<String> {
    let mut found = None;
    let _ = ast::visit_expressions(node, |x| {
        if let ast::Expr::Identifier(i) = x {
            let upper = i.value.to_ascii_uppercase();
            if upper == WINDOWSTART || upper == WINDOWEND {
                found = Some(upper);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// Removes a `WINDOW …` clause (kept by the parser as a table hint) from
/// the query.
fn take_window(query: &mut Query) -> Result<Option<WindowSpec>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(None);
    };
    let Some(from) = select.from.first_mut() else {
        return Ok(None);
    };
    let ast::TableFactor::Table { with_hints, .. } = &mut from.relation else {
        return Ok(None);
    };
    let Some(at) = with_hints.iter().position(
        |h| matches!(h, ast::Expr::Function(f) if f.name.to_string() == crate::parser::WINDOW),
    ) else {
        return Ok(None);
    };
    let hint = with_hints.remove(at);
    let ast::Expr::Function(f) = hint else {
        return Ok(None);
    };
    let ast::FunctionArguments::List(l) = f.args else {
        return Err(PlanError::Internal("a window without arguments".into()));
    };
    let mut kind = String::new();
    let mut ms = Vec::new();
    for a in &l.args {
        match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v))) => {
                match &v.value {
                    Value::SingleQuotedString(k) => kind = k.clone(),
                    Value::Number(n, _) => ms.push(n.parse::<i64>().unwrap_or(-1)),
                    _ => {}
                }
            }
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::UnaryOp {
                ..
            })) => ms.push(-1),
            _ => {}
        }
    }
    let [size, advance, grace, retention] = ms.as_slice() else {
        return Err(PlanError::Internal("a malformed window".into()));
    };
    let kind = match kind.as_str() {
        "TUMBLING" => WindowKind::Tumbling,
        "HOPPING" => WindowKind::Hopping,
        _ => WindowKind::Session,
    };
    if kind == WindowKind::Hopping && *advance > *size {
        return Err(PlanError::Invalid(format!(
            "Window advance must be no larger than the window size: ADVANCE BY {advance} ms, SIZE {size} ms"
        )));
    }
    Ok(Some(WindowSpec {
        kind,
        size_ms: *size,
        advance_ms: if kind == WindowKind::Hopping {
            *advance
        } else {
            *size
        },
        // ksqlDB's default grace period is 24 hours.
        grace_ms: if *grace >= 0 {
            *grace
        } else {
            24 * 60 * 60 * 1000
        },
        retention_ms: (*retention >= 0).then_some(*retention),
        grace_given: *grace >= 0,
    }))
}

/// Checks where a windowed aggregation names the window bounds (only in
/// the SELECT, outside aggregates), groups by them and projects them
/// (reusing an unaliased `WINDOWSTART` item); the names of the two output
/// columns holding the bounds.
fn prepare_window(query: &mut Query, _spec: WindowSpec) -> Result<(String, String)> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Unsupported("only SELECT can be windowed".into()));
    };
    let no_group_by = || {
        // ksqlDB's words: the SELECT's columns are not grouped.
        let items: Vec<String> = select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }
                    if !matches!(e, ast::Expr::Function(_)) =>
                {
                    Some(crate::ksql_ast::ksql_display(e))
                }
                _ => None,
            })
            .collect();
        PlanError::Invalid(format!(
            "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
            items.join(", ")
        ))
    };
    let ast::GroupByExpr::Expressions(groups, _) = &select.group_by else {
        return Err(no_group_by());
    };
    if groups.is_empty() {
        return Err(no_group_by());
    }
    let ast::GroupByExpr::Expressions(groups, _) = &mut select.group_by else {
        return Err(PlanError::Internal("GROUP BY changed".into()));
    };
    let only_select = |name: String| {
        PlanError::Invalid(format!(
            "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
        ))
    };
    for g in groups.iter() {
        if let Some(n) = window_bound_in(g) {
            return Err(only_select(n));
        }
    }
    if let Some(n) = select.having.as_ref().and_then(window_bound_in) {
        return Err(only_select(n));
    }
    if let Some(n) = select.selection.as_ref().and_then(window_bound_in) {
        return Err(PlanError::Invalid(format!(
            "Error in WHERE expression: Unknown column {n}."
        )));
    }
    // Inside an aggregate call.
    let mut inside = None;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            if crate::functions::lookup(&f.name.to_string())
                .is_some_and(|i| i.kind == crate::functions::FunctionKind::Aggregate)
            {
                inside = inside.clone().or_else(|| window_bound_in(&f.args));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(n) = inside {
        return Err(only_select(n));
    }
    groups.push(ast::Expr::Identifier(Ident::new(WINDOWSTART)));
    groups.push(ast::Expr::Identifier(Ident::new(WINDOWEND)));
    Ok(project_window_bounds(select))
}

/// Adds `WINDOWSTART` and `WINDOWEND` to the projection (unless it has them
/// unaliased); the names of the two output columns.
fn project_window_bounds(select: &mut ast::Select) -> (String, String) {
    for bound in [WINDOWSTART, WINDOWEND] {
        let projected = select.projection.iter().any(|item| {
            matches!(item, SelectItem::UnnamedExpr(ast::Expr::Identifier(i))
                if i.value.eq_ignore_ascii_case(bound))
        });
        if !projected {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: ast::Expr::Identifier(Ident::new(bound)),
                alias: quoted(bound),
            });
        }
    }
    (WINDOWSTART.to_string(), WINDOWEND.to_string())
}

/// Whether `e` uses a column outside the GROUP BY expressions (`groups`,
/// as ksqlDB prints them) and outside aggregate calls.
fn uncovered(
    e: &ast::Expr,
    groups: &[String],
    is_aggregate: &dyn Fn(&ast::Function) -> bool,
) -> bool {
    use ast::Expr as E;
    if groups.contains(&crate::ksql_ast::ksql_display(e)) {
        return false;
    }
    let any = |es: &[&ast::Expr]| es.iter().any(|x| uncovered(x, groups, is_aggregate));
    match e {
        E::Identifier(_) | E::CompoundIdentifier(_) => true,
        E::Function(f) if is_aggregate(f) => false,
        E::Function(f) => match &f.args {
            ast::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                | ast::FunctionArg::Named {
                    arg: ast::FunctionArgExpr::Expr(x),
                    ..
                }
                | ast::FunctionArg::ExprNamed {
                    arg: ast::FunctionArgExpr::Expr(x),
                    ..
                } => uncovered(x, groups, is_aggregate),
                _ => false,
            }),
            _ => false,
        },
        // A lambda's parameters are not columns.
        E::Lambda(_) => false,
        E::BinaryOp { left, right, .. } => any(&[left, right]),
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::Cast { expr, .. }
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsTrue(expr)
        | E::IsFalse(expr) => uncovered(expr, groups, is_aggregate),
        E::Between {
            expr, low, high, ..
        } => any(&[expr, low, high]),
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => any(&[expr, pattern]),
        E::InList { expr, list, .. } => {
            uncovered(expr, groups, is_aggregate)
                || list.iter().any(|x| uncovered(x, groups, is_aggregate))
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand
                .as_deref()
                .is_some_and(|x| uncovered(x, groups, is_aggregate))
                || conditions.iter().any(|w| any(&[&w.condition, &w.result]))
                || else_result
                    .as_deref()
                    .is_some_and(|x| uncovered(x, groups, is_aggregate))
        }
        E::CompoundFieldAccess { root, .. } => uncovered(root, groups, is_aggregate),
        other => {
            // Anything else: any column that is not a GROUP BY expression.
            let mut columns = false;
            let _ = ast::visit_expressions(other, |x| {
                columns |= matches!(x, E::Identifier(_) | E::CompoundIdentifier(_))
                    && !groups.contains(&crate::ksql_ast::ksql_display(x));
                ControlFlow::<()>::Continue(())
            });
            columns
        }
    }
}

/// ksqlDB refuses comparisons between unlike types (a number and a string)
/// and with a NULL literal, where DataFusion would coerce.
fn check_comparisons(plan: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
    let mut error = None;
    plan.apply(|node| {
        let Some(input) = node.inputs().first().map(|i| Arc::clone(i.schema())) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let context = match node {
            LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)) => {
                "Error in HAVING expression: "
            }
            LogicalPlan::Filter(_) => "Error in WHERE expression: ",
            _ => "",
        };
        for e in node.expressions() {
            e.apply(|e| {
                let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let (sym, name) = match op {
                    Operator::Eq => ("=", "EQUAL"),
                    Operator::NotEq => ("<>", "NOT_EQUAL"),
                    Operator::Lt => ("<", "LESS_THAN"),
                    Operator::LtEq => ("<=", "LESS_THAN_OR_EQUAL"),
                    Operator::Gt => (">", "GREATER_THAN"),
                    Operator::GtEq => (">=", "GREATER_THAN_OR_EQUAL"),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let is_null = |e: &Expr| matches!(e, Expr::Literal(v, _) if v.is_null());
                if is_null(left) || is_null(right) {
                    error = Some(PlanError::Invalid(format!(
                        "{context}Comparison with NULL not supported: {} {sym} {}",
                        ksql_text(left),
                        ksql_text(right)
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
                let (Ok(l), Ok(r)) = (
                    left.get_type(input.as_ref()),
                    right.get_type(input.as_ref()),
                ) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let class = |t: &DataType| {
                    if t.is_numeric() {
                        1
                    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                    {
                        2
                    } else if *t == DataType::Boolean {
                        3
                    } else {
                        0
                    }
                };
                let (cl, cr) = (class(&l), class(&r));
                if cl != 0 && cr != 0 && cl != cr {
                    let ty = |t: &DataType| {
                        SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.to_string())
                    };
                    error = Some(PlanError::Type(format!(
                        "{context}Cannot compare {} ({}) to {} ({}) with {name}.",
                        ksql_text(left),
                        ty(&l),
                        ksql_text(right),
                        ty(&r)
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            if error.is_some() {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    error.map_or(Ok(()), Err)
}

/// An expression as ksqlDB prints it in messages.
fn ksql_text(e: &Expr) -> String {
    match e {
        // An aggregate's output column, `sum(S.V)`: ksqlDB writes `SUM(V)`.
        Expr::Column(c) if c.name.contains('(') => {
            let (name, args) = c.name.split_at(c.name.find('(').unwrap_or(0));
            let mut out = name.to_ascii_uppercase();
            let mut word = String::new();
            for ch in args.chars() {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    word.push(ch);
                } else if ch == '.' {
                    word.clear(); // a qualifier
                } else {
                    out.push_str(&word);
                    word.clear();
                    out.push(ch);
                }
            }
            out.push_str(&word);
            out
        }
        Expr::Column(c) => c.name.clone(),
        Expr::Literal(v, _) if v.is_null() => "NULL".into(),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => format!("'{s}'"),
        Expr::Literal(v, _) => v.to_string(),
        other => other.to_string(),
    }
}

/// DataFusion's planning errors in Brook's words where we know them.
fn plan_error(e: DataFusionError) -> PlanError {
    // A function's own refusal of its argument types arrives wrapped in
    // DataFusion's coercion message: keep just the function's words.
    let text = e.to_string();
    if let Some(inner) = text
        .split("user-defined coercion failed with: Error during planning: ")
        .nth(1)
    {
        let inner = inner.split(". No function matches").next().unwrap_or(inner);
        let inner = inner.strip_suffix('.').unwrap_or(inner);
        return PlanError::Invalid(format!("{inner}."));
    }
    match e.find_root() {
        DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
            SchemaError::FieldNotFound { field, .. } => PlanError::NotFound {
                kind: "column",
                name: field.name.clone(),
            },
            SchemaError::AmbiguousReference { field } => {
                PlanError::Invalid(format!("column reference \"{}\" is ambiguous", field.name))
            }
            _ => PlanError::DataFusion(e),
        },
        DataFusionError::Plan(msg) => {
            if let Some(name) = msg
                .strip_prefix("Invalid function '")
                .and_then(|m| m.split('\'').next())
            {
                PlanError::Invalid(format!(
                    "Can't find any functions with the name '{}'",
                    name.to_uppercase()
                ))
            } else if let Some(column) = msg
                .split("column \"")
                .nth(1)
                .and_then(|m| m.split('"').next())
                .filter(|_| msg.contains("must appear in the GROUP BY clause"))
            {
                let column = column.rsplit('.').next().unwrap_or(column);
                PlanError::Invalid(format!(
                    "Non-aggregate SELECT expression(s) not part of GROUP BY: {column}\nEither add the column(s) to the GROUP BY or remove them from the SELECT."
                ))
            } else {
                PlanError::Invalid(msg.clone())
            }
        }
        _ => PlanError::DataFusion(e),
    }
}

/// A continuous query (`CREATE … AS SELECT` or a push query).
/// `partition_by` gives the expressions that become the key of the result;
/// `sink` names the source being built, for messages.
pub fn plan_stream(
    catalog: &Catalog,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    sink: Option<&str>,
) -> Result<StreamPlan> {
    // A join is planned as a query over a synthetic source of joined rows.
    let prepared = crate::join::prepare(catalog, query, &|q, s| logical_plan(q, &[s]))?;
    let Some(prepared) = prepared else {
        return plan_single(catalog, query, partition_by, sink);
    };
    let mut joined = catalog.clone();
    joined
        .sources
        .insert(prepared.source.name.clone(), prepared.source.clone());
    let partition_by = match partition_by {
        Some(exprs) => {
            let mut exprs = exprs.to_vec();
            prepared.rename(&mut exprs)?;
            Some(exprs)
        }
        None => None,
    };
    // The key: the left join column if the projection keeps it, else the
    // right one.
    let with_key = |key: &str| {
        let mut catalog = catalog.clone();
        let mut source = prepared.source.clone();
        for c in &mut source.columns {
            c.key = c.name == key;
        }
        catalog.sources.insert(source.name.clone(), source);
        catalog
    };
    let mut chosen = None;
    let mut plan = None;
    for (candidate, _) in &prepared.key_candidates {
        let p = plan_single(
            &with_key(candidate),
            &prepared.query,
            partition_by.as_deref(),
            sink,
        )?;
        let keeps_key = !p.key_columns.is_empty();
        if keeps_key || plan.is_none() {
            chosen = Some(candidate.clone());
            plan = Some(p);
        }
        if keeps_key {
            break;
        }
    }
    let mut plan = match plan {
        Some(p) => p,
        None => plan_single(&joined, &prepared.query, partition_by.as_deref(), sink)?,
    };
    if !plan.is_table && !plan.repartitioned {
        if plan.key_columns.is_empty() {
            let shown: Vec<&str> = prepared
                .key_candidates
                .iter()
                .map(|(_, d)| d.as_str())
                .collect();
            let target = sink.unwrap_or("the result");
            return Err(PlanError::Invalid(if prepared.spec.synthetic_key {
                format!("Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{target}` must include the join expression ROWKEY in its projection (eg, SELECT ROWKEY...).\nROWKEY was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased.")
            } else {
                format!(
                        "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{target}` must include the join {} {} in its projection (eg, SELECT {}...).",
                        if shown.len() > 1 { "expressions" } else { "expression" },
                        match shown.split_last() {
                            Some((last, rest)) if !rest.is_empty() =>
                                format!("{} or {last}", rest.join(", ")),
                            _ => shown.join(""),
                        },
                        shown.first().copied().unwrap_or("ROWKEY")
                    )
            }));
        }
        plan.key_columns.truncate(1);
    }
    let mut source = prepared.source;
    let chosen = chosen.unwrap_or_default();
    for c in &mut source.columns {
        c.key = c.name == chosen;
    }
    let mut spec = prepared.spec;
    if !spec.synthetic_key && !spec.foreign_key {
        spec.key_column = source.columns.iter().position(|c| c.name == chosen);
    }
    plan.source = source;
    plan.join = Some(spec);
    Ok(plan)
}

fn plan_single(
    catalog: &Catalog,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    sink: Option<&str>,
) -> Result<StreamPlan> {
    let sources = referenced_sources(catalog, query)?;
    let [real_source] = sources.as_slice() else {
        return Err(PlanError::Unsupported(if sources.is_empty() {
            "a continuous query needs a FROM clause".into()
        } else {
            "joins are not supported yet".into()
        }));
    };
    // A windowed aggregation is planned over the source plus the window
    // bounds, grouped by them too; they come out as two extra columns.
    let mut query = query.clone();
    let window = take_window(&mut query)?;
    let mut planning_source = (*real_source).clone();
    if window.is_some() || real_source.window.is_some() {
        if let SetExpr::Select(select) = query.body.as_ref() {
            for item in &select.projection {
                if let SelectItem::ExprWithAlias { alias, .. } = item {
                    let name = alias.value.to_ascii_uppercase();
                    if name == WINDOWSTART || name == WINDOWEND {
                        return Err(PlanError::Invalid(format!(
                            "`{name}` is a reserved column name. You cannot use it as an alias for a column."
                        )));
                    }
                }
            }
        }
    }
    let mut window_columns = None;
    // A windowed source: its rows carry their window, which passes through
    // to the result's keys.
    let window = match (window, real_source.window) {
        (Some(_), Some(_)) => {
            return Err(PlanError::Unsupported(
                "a WINDOW over a windowed source is not supported yet".into(),
            ))
        }
        (None, Some(spec)) => {
            let SetExpr::Select(select) = query.body.as_mut() else {
                return Err(PlanError::Unsupported(
                    "only SELECT is supported here".into(),
                ));
            };
            if !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty()) {
                return Err(PlanError::Unsupported(
                    "aggregating a windowed source is not supported yet".into(),
                ));
            }
            window_columns = Some(project_window_bounds(select));
            Some(spec)
        }
        (w, None) => w,
    };
    if let (Some(spec), None) = (window, real_source.window) {
        if real_source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "Windowing not supported for table aggregations.".into(),
            ));
        }
        window_columns = Some(prepare_window(&mut query, spec)?);
        planning_source
            .columns
            .push(Column::new(WINDOWSTART, SqlType::Bigint, false));
        planning_source
            .columns
            .push(Column::new(WINDOWEND, SqlType::Bigint, false));
    }
    let source = &&planning_source;
    let sources = vec![&planning_source];
    let partition = match partition_by {
        Some([ast::Expr::Value(v)]) if v.value == Value::Null => Some(None),
        Some(exprs) => {
            if exprs
                .iter()
                .any(|e| matches!(e, ast::Expr::Value(v) if v.value == Value::Null))
            {
                return Err(PlanError::Invalid(
                    "Cannot PARTITION BY multiple columns including NULL".into(),
                ));
            }
            Some(Some(exprs))
        }
        None => None,
    };
    let mut star_keys = None;
    let mut partition_exprs = Vec::new();
    if let Some(Some(exprs)) = partition {
        partition_exprs = partition_expressions(&query, source, exprs)?;
        if is_select_star(&query) {
            star_keys = Some(star_partition(&mut query, source, exprs, &partition_exprs)?);
        }
    }
    let plan = logical_plan(&query, &sources).map_err(|e| match e {
        PlanError::NotFound {
            kind: "column",
            name,
        } if mentions_column(&query, &name) => {
            PlanError::Invalid(format!("WHERE column '{name}' cannot be resolved."))
        }
        other => other,
    })?;
    let mut limit = None;
    let mut body = &plan;
    if let LogicalPlan::Limit(l) = &plan {
        match l.get_fetch_type()? {
            FetchType::Literal(n) => limit = n,
            FetchType::UnsupportedExpr => {
                return Err(PlanError::Unsupported("LIMIT must be a number".into()))
            }
        }
        body = l.input.as_ref();
    }
    let mut ops = Vec::new();
    let pseudo = source.batch_schema().fields().len() - source.columns.len();
    let mut keys: Vec<bool> = source
        .columns
        .iter()
        .map(|c| c.key)
        .chain(std::iter::repeat_n(false, pseudo))
        .collect();
    lower(body, &mut ops, &mut keys)?;
    let output_schema = Arc::new(Schema::new(body.schema().as_arrow().fields().clone()));
    let mut window_plan = None;
    if let (Some(spec), Some((start, end))) = (window, &window_columns) {
        if real_source.window.is_none() {
            ops.insert(0, StreamOp::Window { spec });
        }
        let start = output_schema.index_of(start)?;
        let end = output_schema.index_of(end)?;
        // The bounds are part of the key, not key columns (also where the
        // projection copies them into the value, `WINDOWSTART AS ws`).
        keys[start] = false;
        keys[end] = false;
        if let Some(StreamOp::Project { exprs, .. }) = ops
            .iter()
            .rev()
            .find(|op| matches!(op, StreamOp::Project { .. }))
        {
            for (i, e) in exprs.iter().enumerate() {
                if let Expr::Column(c) = strip_alias(e) {
                    if c.name == WINDOWSTART || c.name == WINDOWEND {
                        if let Some(k) = keys.get_mut(i) {
                            *k = false;
                        }
                    }
                }
            }
        }
        window_plan = Some((spec, start, end));
    }
    let mut key_columns: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| **k)
        .map(|(i, _)| i)
        .collect();
    // An aggregation's key columns are in GROUP BY order, as ksqlDB writes
    // them, whatever the projection's order.
    if let Some(StreamOp::Project {
        exprs,
        input_schema,
        ..
    }) = ops
        .iter()
        .skip_while(|op| !matches!(op, StreamOp::Aggregate { .. }))
        .find(|op| matches!(op, StreamOp::Project { .. }))
    {
        key_columns.sort_by_key(|&i| match exprs.get(i).map(strip_alias) {
            Some(Expr::Column(c)) => input_schema.index_of_column(c).unwrap_or(usize::MAX),
            _ => usize::MAX,
        });
    }
    let is_table = ops
        .iter()
        .any(|op| matches!(op, StreamOp::Aggregate { .. }));
    if is_table && source.value_format == Format::Kafka {
        return Err(PlanError::Invalid(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
            source.name
        )));
    }
    if ops.iter().any(|op| matches!(op, StreamOp::Explode { .. })) {
        if source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "Table source is not supported with table functions".into(),
            ));
        }
        if is_table {
            return Err(PlanError::Invalid(
                "Table functions cannot be used with aggregations.".into(),
            ));
        }
    }
    if partition.is_none() && !is_table {
        check_key_projected_once(body, source)?;
    }
    if let Some(exprs) = partition {
        if is_table || source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "PARTITION BY is only supported on streams, without GROUP BY".into(),
            ));
        }
        key_columns = match (exprs, star_keys) {
            (None, _) => Vec::new(),
            (Some(_), Some(n)) => (0..n).collect(),
            (Some(exprs), None) => projected_keys(
                body,
                source,
                exprs,
                &partition_exprs,
                sink.unwrap_or("the result"),
            )?,
        };
    }
    Ok(StreamPlan {
        source: (*real_source).clone(),
        ops,
        output_schema,
        key_columns,
        is_table,
        limit,
        repartitioned: matches!(partition, Some(Some(_))),
        join: None,
        window: window_plan,
        emit_final: false,
        consolidate: false,
    })
}

/// Whether the WHERE clause of `query` names the column `name`.
fn mentions_column(query: &Query, name: &str) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let Some(selection) = &select.selection else {
        return false;
    };
    let mut found = false;
    let _ = ast::visit_expressions(selection, |e| {
        if let ast::Expr::Identifier(i) = e {
            found |= i.value == name;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// ksqlDB refuses a projection that copies a key column twice: the copy
/// would be a value column holding the key.
fn check_key_projected_once(plan: &LogicalPlan, source: &SourceDef) -> Result<()> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(());
    };
    for key in source.key_columns() {
        let aliases: Vec<&str> = p
            .expr
            .iter()
            .zip(p.schema.fields())
            .filter(|(e, _)| matches!(strip_alias(e), Expr::Column(c) if c.name == key.name))
            .map(|(_, f)| f.name().as_str())
            .collect();
        if aliases.len() > 1 {
            return Err(key_projected_twice(&key.name, &aliases));
        }
    }
    Ok(())
}

fn is_select_star(query: &Query) -> bool {
    matches!(query.body.as_ref(), SetExpr::Select(s)
        if matches!(s.projection.as_slice(), [SelectItem::Wildcard(_)]))
}

/// The PARTITION BY expressions planned against the source: PARTITION BY
/// applies to the input rows, before the projection.
fn partition_expressions(
    query: &Query,
    source: &SourceDef,
    exprs: &[ast::Expr],
) -> Result<Vec<Expr>> {
    let mut probe = query.clone();
    probe.order_by = None;
    if let SetExpr::Select(select) = probe.body.as_mut() {
        select.projection = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: quoted(&format!("__partition_{i}")),
            })
            .collect();
        select.group_by = ast::GroupByExpr::Expressions(vec![], vec![]);
        select.having = None;
    }
    let plan = logical_plan(&probe, &[source]).map_err(|e| match e {
        PlanError::NotFound { kind: "column", name } => PlanError::Invalid(format!(
            "PARTITION BY column '{name}' cannot be resolved. '{name}' must be a column in the source schema since PARTITION BY is applied on the input."
        )),
        other => other,
    })?;
    let mut node = &plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                return Ok(p.expr.iter().map(|e| strip_alias(e).clone()).collect())
            }
            other => match other.inputs().first() {
                Some(input) => node = input,
                None => {
                    return Err(PlanError::Internal(
                        "PARTITION BY expressions did not plan as a projection".into(),
                    ))
                }
            },
        }
    }
}

/// The field name of `get_field(s, 'F')`, the rewritten `s->f`.
fn struct_field(e: &ast::Expr) -> Option<String> {
    let ast::Expr::Function(f) = e else {
        return None;
    };
    let ast::FunctionArguments::List(l) = &f.args else {
        return None;
    };
    match (f.name.to_string().as_str(), l.args.get(1)) {
        (
            "get_field",
            Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v)))),
        ) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The name ksqlDB gives a PARTITION BY key under `SELECT *`: a column's
/// name, a struct field's name, or `KSQL_COL_<n>`. A pseudo-column keeps
/// its name only when it is one of several keys.
fn partition_key_name(e: &Expr, several: bool, generated: &mut usize) -> String {
    match e {
        Expr::Column(c) if several || !reserved(&c.name) => return c.name.clone(),
        Expr::ScalarFunction(f) if f.func.name() == "get_field" => {
            if let Some(Expr::Literal(ScalarValue::Utf8(Some(name)), _)) = f.args.get(1) {
                return name.clone();
            }
        }
        _ => {}
    }
    *generated += 1;
    format!("KSQL_COL_{}", *generated - 1)
}

/// `A`, `A and B`, `A, B and C`, as ksqlDB lists names in messages.
fn and_list(names: &[String]) -> String {
    match names {
        [init @ .., last] if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        _ => names.join(", "),
    }
}

/// ksqlDB's refusal of a key column projected under several names.
fn key_projected_twice(key: &str, aliases: &[&str]) -> PlanError {
    let mut aliases = aliases.to_vec();
    aliases.sort_unstable();
    PlanError::Invalid(format!(
        "The projection contains a key column (`{key}`) more than once, aliased as: {}.",
        aliases.join(" and ")
    ))
}

/// `SELECT * … PARTITION BY e…`: the projection becomes the keys, then the
/// source's value columns, then its old key columns, leaving out columns
/// that became keys. Returns the number of key columns.
fn star_partition(
    query: &mut Query,
    source: &SourceDef,
    exprs: &[ast::Expr],
    planned: &[Expr],
) -> Result<usize> {
    let mut generated = 0usize;
    let mut items = Vec::new();
    let mut moved = Vec::new();
    for (ast_expr, e) in exprs.iter().zip(planned) {
        if let Expr::Column(c) = e {
            moved.push(c.name.clone());
        }
        items.push(SelectItem::ExprWithAlias {
            expr: ast_expr.clone(),
            alias: quoted(&partition_key_name(e, planned.len() > 1, &mut generated)),
        });
    }
    let rest = source
        .value_columns()
        .chain(source.key_columns())
        .filter(|c| !moved.contains(&c.name));
    items.extend(rest.map(|c| SelectItem::UnnamedExpr(ast::Expr::Identifier(quoted(&c.name)))));
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = items;
    }
    Ok(exprs.len())
}

/// The output columns that an explicit projection gives the PARTITION BY
/// expressions, in PARTITION BY order.
fn projected_keys(
    plan: &LogicalPlan,
    source: &SourceDef,
    exprs: &[ast::Expr],
    planned: &[Expr],
    sink: &str,
) -> Result<Vec<usize>> {
    let projection: Vec<&Expr> = match plan {
        LogicalPlan::Projection(p) => p.expr.iter().collect(),
        _ => Vec::new(),
    };
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut keys = Vec::with_capacity(planned.len());
    for pk in planned {
        let found: Vec<usize> = projection
            .iter()
            .enumerate()
            .filter(|(_, e)| strip_alias(e) == pk)
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] => {
                let texts: Vec<String> = exprs
                    .iter()
                    .map(|e| qualified_text(e, &source.name))
                    .collect();
                let what = if texts.len() > 1 {
                    "expressions"
                } else {
                    "expression"
                };
                let listed = and_list(&texts);
                return Err(PlanError::Invalid(format!(
                    "Key missing from projection (ie, SELECT). The query used to build `{sink}` must include the partitioning {what} {listed} in its projection (eg, SELECT {}...).",
                    texts.join(", ")
                )));
            }
            [one] => {
                if keys.contains(one) {
                    return Err(PlanError::Invalid(format!(
                        "Duplicate PARTITION BY expression: {pk}"
                    )));
                }
                keys.push(*one)
            }
            several => {
                let key = match pk {
                    Expr::Column(c) => c.name.clone(),
                    _ => names[several[0]].clone(),
                };
                let aliases: Vec<&str> = several.iter().map(|i| names[*i].as_str()).collect();
                return Err(key_projected_twice(&key, &aliases));
            }
        }
    }
    Ok(keys)
}

/// An expression with its column names qualified by the source, as
/// ksqlDB prints PARTITION BY expressions in messages.
fn qualified_text(e: &ast::Expr, source: &str) -> String {
    let mut e = e.clone();
    let _ = ast::visit_expressions_mut(&mut e, |e| {
        if let ast::Expr::Identifier(i) = e {
            *e = ast::Expr::CompoundIdentifier(vec![Ident::new(source), i.clone()]);
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

/// ksqlDB's casts: refuses collection casts ksqlDB refuses (`context`
/// prefixes the message, as ksqlDB's does), and routes casts of
/// collections to STRING through ksqlDB's text form.
fn ksql_casts(
    exprs: Vec<Expr>,
    schema: &datafusion::common::DFSchemaRef,
    context: &str,
) -> Result<Vec<Expr>> {
    use crate::functions::cast;
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::ExprSchemable;
    let is_collection = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
        )
    };
    exprs
        .into_iter()
        .map(|e| {
            e.transform_up(|node| match &node {
                Expr::ScalarFunction(f) if f.func.name() == cast::NAME => {
                    let arg_type = f.args[0].get_type(schema.as_ref())?;
                    if arg_type == DataType::Null {
                        return Ok(Transformed::no(node));
                    }
                    let from = SqlType::from_arrow(&arg_type);
                    let to = SqlType::from_arrow(&node.get_type(schema.as_ref())?);
                    if let (Ok(from), Ok(to)) = (from, to) {
                        if let Some(why) = cast::refusal(&from, &to) {
                            return Err(DataFusionError::Plan(format!("{context}{why}")));
                        }
                    }
                    Ok(Transformed::no(node))
                }
                Expr::BinaryExpr(b) if is_ordering(b.op) => {
                    let lt = b.left.get_type(schema.as_ref())?;
                    let rt = b.right.get_type(schema.as_ref())?;
                    if is_collection(&lt) || is_collection(&rt) {
                        let name = |t: &DataType| {
                            SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.quoted())
                        };
                        return Err(DataFusionError::Plan(format!(
                            "Cannot compare {} ({}) to {} ({}) with {}.",
                            ksql_text(&b.left),
                            name(&lt),
                            ksql_text(&b.right),
                            name(&rt),
                            comparison_name(b.op)
                        )));
                    }
                    Ok(Transformed::no(node))
                }
                Expr::Cast(c)
                    if c.field.data_type() == &DataType::Utf8
                        && is_collection(&c.expr.get_type(schema.as_ref())?) =>
                {
                    let call = Expr::ScalarFunction(
                        datafusion::logical_expr::expr::ScalarFunction::new_udf(
                            Arc::new(cast::udf()),
                            vec![
                                (*c.expr).clone(),
                                Expr::Literal(ScalarValue::Utf8(Some("STRING".into())), None),
                            ],
                        ),
                    );
                    Ok(Transformed::yes(call))
                }
                _ => Ok(Transformed::no(node)),
            })
            .map(|t| t.data)
            .map_err(plan_error)
        })
        .collect()
}

/// `<`, `<=`, `>`, `>=`: comparisons collections do not support.
fn is_ordering(op: datafusion::logical_expr::Operator) -> bool {
    use datafusion::logical_expr::Operator;
    matches!(
        op,
        Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
    )
}

/// ksqlDB's name of a comparison operator.
fn comparison_name(op: datafusion::logical_expr::Operator) -> &'static str {
    use datafusion::logical_expr::Operator;
    match op {
        Operator::Lt => "LESS_THAN",
        Operator::LtEq => "LESS_THAN_OR_EQUAL",
        Operator::Gt => "GREATER_THAN",
        Operator::GtEq => "GREATER_THAN_OR_EQUAL",
        Operator::Eq => "EQUAL",
        Operator::NotEq => "NOT_EQUAL",
        _ => "COMPARISON",
    }
}

/// Table functions belong in the SELECT list only.
fn refuse_table_functions(exprs: &[Expr]) -> Result<()> {
    for e in exprs {
        let mut found = None;
        e.apply(|n| {
            if let Expr::ScalarFunction(f) = n {
                if TableFunc::from_name(f.func.name()).is_some() {
                    found = Some(f.func.name().to_uppercase());
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if let Some(name) = found {
            return Err(PlanError::Invalid(format!(
                "Table function {name} can only be used in the SELECT list"
            )));
        }
    }
    Ok(())
}

/// Moves the table-function calls of a projection (`EXPLODE(x)`) into a
/// [`StreamOp::Explode`] before it: each call becomes a column the
/// projection reads. Returns the projection's expressions and input schema.
fn split_table_functions(
    exprs: &[Expr],
    input_schema: &datafusion::common::DFSchemaRef,
    ops: &mut Vec<StreamOp>,
    keys: &mut Vec<bool>,
) -> Result<(Vec<Expr>, datafusion::common::DFSchemaRef)> {
    use datafusion::common::tree_node::Transformed;
    let mut calls: Vec<(TableFunc, Expr)> = Vec::new();
    let mut fields = Vec::new();
    let mut out = Vec::with_capacity(exprs.len());
    for e in exprs {
        let rewritten = e
            .clone()
            .transform_up(|node| {
                let Expr::ScalarFunction(f) = &node else {
                    return Ok(Transformed::no(node));
                };
                let Some(func) = TableFunc::from_name(f.func.name()) else {
                    return Ok(Transformed::no(node));
                };
                let [arg] = f.args.as_slice() else {
                    return Ok(Transformed::no(node));
                };
                let name = format!("__brook_udtf_{}", calls.len());
                let ty = datafusion::logical_expr::ExprSchemable::get_type(
                    &node,
                    input_schema.as_ref(),
                )?;
                fields.push(datafusion::arrow::datatypes::Field::new(&name, ty, true));
                calls.push((func, arg.clone()));
                Ok(Transformed::yes(Expr::Column(
                    datafusion::common::Column::from_name(name),
                )))
            })
            .map_err(PlanError::from)?
            .data;
        out.push(rewritten);
    }
    if calls.is_empty() {
        return Ok((out, Arc::clone(input_schema)));
    }
    if calls.iter().any(|(_, arg)| {
        arg.exists(|n| {
            Ok(matches!(n, Expr::ScalarFunction(f) if TableFunc::from_name(f.func.name()).is_some()))
        })
        .unwrap_or(false)
    }) {
        return Err(PlanError::Invalid("Table functions cannot be nested.".into()));
    }
    let extra =
        datafusion::common::DFSchema::from_unqualified_fields(fields.into(), Default::default())?;
    let mut output_schema = input_schema.as_ref().clone();
    output_schema.merge(&extra);
    let output_schema = Arc::new(output_schema);
    keys.extend(calls.iter().map(|_| false));
    ops.push(StreamOp::Explode {
        calls,
        input_schema: Arc::clone(input_schema),
        output_schema: Arc::clone(&output_schema),
    });
    Ok((out, output_schema))
}

/// Lowers a logical plan into stream operators, tracking which columns of
/// each step's output are key columns.
fn lower(plan: &LogicalPlan, ops: &mut Vec<StreamOp>, keys: &mut Vec<bool>) -> Result<()> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(()),
        LogicalPlan::SubqueryAlias(a) => lower(&a.input, ops, keys),
        LogicalPlan::Filter(f) => {
            lower(&f.input, ops, keys)?;
            refuse_table_functions(std::slice::from_ref(&f.predicate))?;
            // Above an aggregation this is HAVING, evaluated on its output.
            ops.push(StreamOp::Filter {
                predicate: f.predicate.clone(),
                input_schema: Arc::clone(f.input.schema()),
            });
            Ok(())
        }
        LogicalPlan::Projection(p) => {
            lower(&p.input, ops, keys)?;
            let exprs = ksql_casts(p.expr.clone(), p.input.schema(), "Invalid Select: ")?;
            let (exprs, input_schema) = split_table_functions(&exprs, p.input.schema(), ops, keys)?;
            let input_schema = &input_schema;
            let new_keys = exprs
                .iter()
                .map(|e| match strip_alias(e) {
                    Expr::Column(c) => input_schema
                        .index_of_column(c)
                        .map(|i| keys.get(i).copied().unwrap_or(false))
                        .unwrap_or(false),
                    _ => false,
                })
                .collect();
            *keys = new_keys;
            ops.push(StreamOp::Project {
                exprs,
                input_schema: Arc::clone(input_schema),
                output_schema: Arc::clone(&p.schema),
            });
            Ok(())
        }
        LogicalPlan::Aggregate(a) => {
            lower(&a.input, ops, keys)?;
            if ops
                .iter()
                .any(|op| matches!(op, StreamOp::Aggregate { .. }))
            {
                return Err(PlanError::Unsupported(
                    "nested aggregations are not supported".into(),
                ));
            }
            if a.group_expr.is_empty() {
                return Err(PlanError::Unsupported(
                    "aggregations without GROUP BY are not supported in continuous queries".into(),
                ));
            }
            if a.aggr_expr.is_empty() {
                return Err(PlanError::Invalid(
                    "GROUP BY requires aggregate functions in either the SELECT or HAVING clause."
                        .into(),
                ));
            }
            refuse_table_functions(&a.group_expr)?;
            refuse_table_functions(&a.aggr_expr)?;
            let aggs = a
                .aggr_expr
                .iter()
                .map(agg_call)
                .collect::<Result<Vec<_>>>()?;
            *keys = (0..a.group_expr.len())
                .map(|_| true)
                .chain(aggs.iter().map(|_| false))
                .collect();
            ops.push(StreamOp::Aggregate {
                group: a.group_expr.clone(),
                aggs,
                input_schema: Arc::clone(a.input.schema()),
                output_schema: Arc::clone(&a.schema),
            });
            Ok(())
        }
        LogicalPlan::Sort(_) => Err(PlanError::Unsupported(
            "ORDER BY is not supported in continuous queries".into(),
        )),
        LogicalPlan::Join(_) => Err(PlanError::Unsupported("joins are not supported yet".into())),
        LogicalPlan::Limit(_) => Err(PlanError::Unsupported(
            "LIMIT is only allowed at the end of a push query".into(),
        )),
        LogicalPlan::Distinct(_) => Err(PlanError::Unsupported(
            "SELECT DISTINCT is not supported in continuous queries".into(),
        )),
        other => Err(PlanError::Unsupported(format!(
            "{} is not supported in continuous queries",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this plan")
        ))),
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn agg_call(e: &Expr) -> Result<AggCall> {
    let Expr::AggregateFunction(f) = strip_alias(e) else {
        return Err(PlanError::Unsupported(format!(
            "aggregate {e} is not supported"
        )));
    };
    if f.params.distinct || f.params.filter.is_some() || !f.params.order_by.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "aggregate {e} is not supported yet"
        )));
    }
    let func = match f.func.name() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "latest_by_offset" | "earliest_by_offset" => {
            let constants: Vec<Option<&ScalarValue>> = f.params.args[1..]
                .iter()
                .map(|a| match a {
                    Expr::Literal(v, _) => Some(v),
                    _ => None,
                })
                .collect();
            let opts = ByOffsetArgs::from_constants(&constants).ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{}: the number of values must be a positive integer literal and ignoreNulls a boolean literal",
                    f.func.name().to_uppercase()
                ))
            })?;
            let arg = f.params.args[0].clone();
            let func = if f.func.name() == "latest_by_offset" {
                AggFunc::Latest(opts)
            } else {
                AggFunc::Earliest(opts)
            };
            return Ok(AggCall {
                func,
                arg: Some(arg),
            });
        }
        "correlation" => {
            let [x, y] = f.params.args.as_slice() else {
                return Err(PlanError::Unsupported(format!(
                    "{e}: expected two arguments"
                )));
            };
            let pair =
                datafusion::functions_nested::expr_fn::make_array(vec![x.clone(), y.clone()]);
            return Ok(AggCall {
                func: AggFunc::Correlation,
                arg: Some(pair),
            });
        }
        "array_agg" => AggFunc::CollectList,
        "sum_list" => AggFunc::SumList,
        name @ ("topk" | "topkdistinct") => {
            let k = match f.params.args.get(1) {
                Some(Expr::Literal(ScalarValue::Int32(Some(k)), _)) => usize::try_from(*k).ok(),
                Some(Expr::Literal(ScalarValue::Int64(Some(k)), _)) => usize::try_from(*k).ok(),
                _ => None,
            }
            .filter(|k| *k > 0)
            .ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{}: the number of values must be a positive integer literal",
                    name.to_uppercase()
                ))
            })?;
            let func =
                crate::functions::agg::MultisetFunc::from_name(name, Some(k)).ok_or_else(|| {
                    PlanError::Internal(format!("{name} is not a multiset aggregate"))
                })?;
            return Ok(AggCall {
                func: AggFunc::Multiset(func),
                arg: Some(f.params.args[0].clone()),
            });
        }
        name @ ("collect_set" | "histogram" | "count_distinct" | "attr" | "stddev_samp") => {
            AggFunc::Multiset(
                crate::functions::agg::MultisetFunc::from_name(name, None).ok_or_else(|| {
                    PlanError::Internal(format!("{name} is not a multiset aggregate"))
                })?,
            )
        }
        other => {
            return Err(PlanError::Unsupported(format!(
                "aggregate function {} is not supported yet",
                other.to_uppercase()
            )))
        }
    };
    let arg = match f.params.args.as_slice() {
        [Expr::Literal(v, _)] if func == AggFunc::Count && !v.is_null() => None,
        [arg] => Some(arg.clone()),
        _ => {
            return Err(PlanError::Unsupported(format!(
                "{e}: expected one argument"
            )))
        }
    };
    Ok(AggCall { func, arg })
}

/// `EMIT FINAL`: a windowed aggregation emits each window's result once,
/// when it closes.
pub fn make_emit_final(plan: &mut StreamPlan) -> Result<()> {
    let Some((spec, _, _)) = &mut plan.window else {
        return Err(PlanError::Invalid(
            "EMIT FINAL is only supported for windowed aggregations.".into(),
        ));
    };
    // Without a GRACE PERIOD, a final result comes when the window ends.
    if !spec.grace_given {
        spec.grace_ms = 0;
        let spec = *spec;
        for op in &mut plan.ops {
            if let StreamOp::Window { spec: s } = op {
                *s = spec;
            }
        }
    }
    plan.emit_final = true;
    Ok(())
}

/// `CREATE STREAM|TABLE name WITH (…) AS SELECT …`: the sink's definition
/// and the plan that fills it.
#[allow(clippy::too_many_arguments)]
pub fn plan_create_as_select(
    catalog: &Catalog,
    kind: SourceKind,
    name: &str,
    props: &Props,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    query_id: &str,
    emit_final: bool,
) -> Result<(SourceDef, StreamPlan)> {
    check_props(props)?;
    let mut plan = plan_stream(catalog, query, partition_by, Some(name))?;
    if emit_final {
        make_emit_final(&mut plan)?;
    }
    if plan.limit.is_some() {
        return Err(PlanError::Invalid(
            "LIMIT is not supported in persistent queries".into(),
        ));
    }
    match (kind, plan.is_table || plan.source.kind == SourceKind::Table) {
        (SourceKind::Table, false) => {
            return Err(PlanError::Invalid(
                "Invalid result type. Your SELECT query produces a STREAM. Please use CREATE STREAM AS SELECT statement instead.".into(),
            ))
        }
        (SourceKind::Stream, true) => {
            return Err(PlanError::Invalid(
                "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.".into(),
            ))
        }
        _ => {}
    }
    let mut columns = Vec::with_capacity(plan.output_schema.fields().len());
    // A windowed aggregation's bounds go into the key, not the columns.
    let hidden = |i: usize| plan.window.is_some_and(|(_, a, b)| i == a || i == b);
    for (i, f) in plan.output_schema.fields().iter().enumerate() {
        // `PARTITION BY a, ROWTIME` names a key ROWTIME, as ksqlDB does.
        let several_keys = partition_by.is_some() && plan.key_columns.len() > 1;
        if reserved(f.name()) && !(several_keys && plan.key_columns.contains(&i)) && !hidden(i) {
            return Err(PlanError::Invalid(if is_alias(query, f.name()) {
                format!(
                    "`{}` is a reserved column name. You cannot use it as an alias for a column.",
                    f.name()
                )
            } else {
                format!(
                    "Reserved column name in select: `{}`. Please remove or alias the column.",
                    f.name()
                )
            }));
        }
        if *f.data_type() == DataType::Null {
            return Err(PlanError::Type(
                "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR).".into(),
            ));
        }
        columns.push(Column::new(
            f.name().clone(),
            SqlType::from_arrow(f.data_type())?,
            plan.key_columns.contains(&i),
        ));
    }
    let (timestamp_column, timestamp_format) = timestamp_prop(props, &columns)?;
    let source_keys: Vec<&str> = plan.source.key_columns().map(|c| c.name.as_str()).collect();
    let expected_keys = match plan.ops.iter().find_map(|op| match op {
        StreamOp::Aggregate { group, .. } => Some(group.len()),
        _ => None,
    }) {
        Some(n) if plan.window.is_some() => n.saturating_sub(2),
        Some(n) => n,
        None if partition_by.is_some() => plan.key_columns.len(),
        None => source_keys.len(),
    };
    if plan.key_columns.len() < expected_keys {
        let group: Vec<String> = plan
            .ops
            .iter()
            .find_map(|op| match op {
                StreamOp::Aggregate { group, .. } => Some(group.iter().map(ksql_text).collect()),
                _ => None,
            })
            .unwrap_or_default();
        // Only the grouping expressions the projection leaves out.
        let kept: Vec<usize> = plan
            .ops
            .iter()
            .skip_while(|op| !matches!(op, StreamOp::Aggregate { .. }))
            .find_map(|op| match op {
                StreamOp::Project {
                    exprs,
                    input_schema,
                    ..
                } => Some(
                    exprs
                        .iter()
                        .filter_map(|e| match strip_alias(e) {
                            Expr::Column(c) => input_schema.index_of_column(c).ok(),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let missing: Vec<String> = group
            .iter()
            .enumerate()
            .filter(|(i, _)| !kept.contains(i))
            .map(|(_, g)| g.clone())
            .collect();
        let (what, names) = if plan.is_table {
            (
                "grouping expression",
                if missing.is_empty() { group } else { missing },
            )
        } else {
            (
                "key column",
                source_keys.iter().map(|s| s.to_string()).collect(),
            )
        };
        let plural = if names.len() > 1 { "s" } else { "" };
        let listed = and_list(&names);
        return Err(PlanError::Invalid(format!(
            "Key missing from projection (ie, SELECT). The query used to build `{name}` must include the {what}{plural} {listed} in its projection (eg, SELECT {}...).",
            names.join(", ")
        )));
    }
    // Key columns first (in key order), as in every Brook source; the sink
    // maps columns by name.
    let mut sorted: Vec<Column> = plan
        .key_columns
        .iter()
        .map(|i| columns[*i].clone())
        .collect();
    sorted.extend(
        columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !c.key && !hidden(*i))
            .map(|(_, c)| c.clone()),
    );
    let source_key_format = match plan.source.key_format {
        Format::None => plan.source.keyless_format.unwrap_or(Format::None),
        other => other,
    };
    let (key_format, value_format) =
        formats(props, source_key_format, Some(plan.source.value_format))?;
    if plan.key_columns.is_empty() && prop(props, "KEY_FORMAT").is_some() {
        return Err(PlanError::Invalid(
            "Key format specified for stream without key columns.".into(),
        ));
    }
    let key_format = if plan.key_columns.is_empty() {
        Format::None
    } else if key_format == Format::None {
        Format::Kafka
    } else {
        key_format
    };
    check_formats(key_format, value_format, &sorted)?;
    if sorted.iter().all(|c| c.key) {
        return Err(PlanError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    let unwrapped = unwrapped_prop(props, &sorted)?;
    let def = SourceDef {
        name: name.to_string(),
        kind,
        columns: sorted,
        topic: prop(props, "KAFKA_TOPIC").map_or_else(|| name.to_string(), PropValue::as_text),
        partitions: partitions_prop(props)?.unwrap_or(plan.source.partitions),
        key_format,
        value_format,
        timestamp_column,
        timestamp_format,
        query_id: Some(query_id.to_string()),
        retention_ms: positive_prop(props, "RETENTION_MS")?.map(|n| n as i64),
        retention_bytes: positive_prop(props, "RETENTION_BYTES")?,
        keyless_format: None,
        unwrapped,
        read_only: false,
        window: plan.window.map(|(spec, _, _)| spec),
    };
    if def.topic == plan.source.topic {
        return Err(PlanError::Invalid(format!(
            "The sink topic '{}' of {name} is the topic of its source {}: a query cannot read its own output.",
            def.topic, plan.source.name
        )));
    }
    Ok((def, plan))
}

/// `ALTER STREAM|TABLE name ADD COLUMN …`: the source with the value
/// columns appended. Records written before read the new columns as NULL.
pub fn plan_alter(
    catalog: &Catalog,
    kind: SourceKind,
    name: &str,
    specs: &[ColumnSpec],
) -> Result<SourceDef> {
    let mut def = catalog.source(name)?.clone();
    if def.kind != kind {
        return Err(PlanError::Invalid(format!(
            "Incompatible data source type is {}, but statement was ALTER {}",
            def.kind.noun().to_uppercase(),
            kind.noun().to_uppercase()
        )));
    }
    if def.read_only {
        return Err(PlanError::Invalid(format!(
            "Cannot alter {} '{name}': ALTER operations are not supported on source {}s.",
            kind.noun(),
            kind.noun()
        )));
    }
    if def.query_id.is_some() {
        return Err(PlanError::Invalid(
            "ALTER command is not supported for CREATE ... AS statements.".into(),
        ));
    }
    for spec in specs {
        check_not_reserved(&spec.name)?;
        if def.column(&spec.name).is_some() {
            return Err(PlanError::Invalid(format!(
                "Cannot add column `{}` to schema. A column with the same name already exists.",
                spec.name
            )));
        }
        if let Some(h) = &spec.header {
            check_header_type(h, &spec.ty)?;
        }
        def.columns.push(Column {
            name: spec.name.clone(),
            ty: spec.ty.clone(),
            key: false,
            header: spec.header.clone(),
        });
    }
    check_formats(def.key_format, def.value_format, &def.columns)?;
    if def.unwrapped && def.value_columns().count() != 1 {
        return Err(PlanError::Invalid(
            "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas".into(),
        ));
    }
    Ok(def)
}

/// `INSERT INTO target SELECT …`: the plan, checked against the target
/// stream's schema.
pub fn plan_insert_select(
    catalog: &Catalog,
    target: &str,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
) -> Result<(SourceDef, StreamPlan)> {
    let sink = catalog.source(target)?.clone();
    if sink.read_only {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into read-only {}: {target}",
            sink.kind.noun()
        )));
    }
    if sink.kind != SourceKind::Stream {
        return Err(PlanError::Invalid(format!(
            "INSERT INTO can only be used to insert into a stream. {target} is a table."
        )));
    }
    if sink.header_columns().next().is_some() {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into {target} because it has header columns"
        )));
    }
    let plan = plan_stream(catalog, query, partition_by, Some(target))?;
    if let Some(f) = plan
        .output_schema
        .fields()
        .iter()
        .find(|f| reserved(f.name()))
    {
        return Err(PlanError::Invalid(format!(
            "Reserved column name in select: `{}`. Please remove or alias the column.",
            f.name()
        )));
    }
    if plan.is_table || plan.source.kind == SourceKind::Table {
        return Err(PlanError::Invalid(
            "INSERT INTO can only be used to insert from a stream into a stream. The query produces a table, not a stream.".into(),
        ));
    }
    if plan.limit.is_some() {
        return Err(PlanError::Invalid(
            "LIMIT is not supported in persistent queries".into(),
        ));
    }
    if sink.topic == plan.source.topic {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into {target} from itself: a query cannot read its own output."
        )));
    }
    let describe = |cols: &mut Vec<String>| {
        cols.sort();
        cols.join(", ")
    };
    let mut result: Vec<String> = plan
        .output_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = SqlType::from_arrow(f.data_type())
                .map_or_else(|_| f.data_type().to_string(), |t| t.to_string());
            format!(
                "`{}` {ty}{}",
                f.name(),
                if plan.key_columns.contains(&i) {
                    " KEY"
                } else {
                    ""
                }
            )
        })
        .collect();
    let mut expected: Vec<String> = sink
        .columns
        .iter()
        .map(|c| format!("`{}` {}{}", c.name, c.ty, if c.key { " KEY" } else { "" }))
        .collect();
    if describe(&mut result) != describe(&mut expected) {
        return Err(PlanError::Invalid(format!(
            "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
            result.join(", "),
            expected.join(", ")
        )));
    }
    Ok((sink, plan))
}

/// Whether the query's projection gives some expression the alias `name`.
fn is_alias(query: &Query, name: &str) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    select
        .projection
        .iter()
        .any(|item| matches!(item, SelectItem::ExprWithAlias { alias, .. } if alias.value == name))
}

/// A pull query: any SELECT DataFusion can run over the sources' current
/// contents.
pub fn plan_pull(catalog: &Catalog, query: &Query) -> Result<PullPlan> {
    let sources = referenced_sources(catalog, query)?;
    let plan = logical_plan(query, &sources)?;
    Ok(PullPlan {
        plan,
        sources: sources.into_iter().cloned().collect(),
    })
}

/// A row to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertRow {
    /// `ROWTIME` if given.
    pub rowtime: Option<i64>,
    /// One value per declared column of the target, in its order.
    pub values: Vec<ScalarValue>,
}

/// `INSERT INTO target [(cols)] VALUES …`.
pub fn plan_insert(
    catalog: &Catalog,
    target: &str,
    columns: &[String],
    rows: &[Vec<ast::Expr>],
) -> Result<(SourceDef, Vec<InsertRow>)> {
    let def = match catalog.source(target) {
        Ok(def) => def.clone(),
        Err(e) => {
            // The name differs only in case from an existing one: say how
            // to write it, as ksqlDB does.
            let similar = catalog
                .sources
                .keys()
                .find(|n| n.eq_ignore_ascii_case(target) && n.as_str() != target);
            return Err(match similar {
                Some(n) if *n != n.to_ascii_uppercase() => PlanError::Invalid(format!(
                    "Cannot insert values into an unknown stream/table: `{target}`\nDid you mean \"{n}\"? Hint: wrap the source name in double quotes to make it case-sensitive."
                )),
                Some(n) => PlanError::Invalid(format!(
                    "Cannot insert values into an unknown stream/table: `{target}`\nDid you mean {n}? Hint: try removing double quotes from the source name."
                )),
                None => e,
            });
        }
    };
    if def.read_only {
        return Err(PlanError::Invalid(format!(
            "Cannot insert values into read-only {}: {}",
            def.kind.noun(),
            def.name
        )));
    }
    if let Some(q) = &def.query_id {
        return Err(PlanError::Invalid(format!(
            "cannot insert into {} \"{}\": it is written by persistent query {q}",
            def.kind.noun(),
            def.name
        )));
    }
    let names: Vec<String> = if columns.is_empty() {
        def.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        columns.to_vec()
    };
    // Position of each named column in the target (None = ROWTIME).
    let mut slots = Vec::with_capacity(names.len());
    for n in &names {
        if n == ROWTIME {
            slots.push(None);
        } else {
            let i = def
                .columns
                .iter()
                .position(|c| c.name == *n)
                .ok_or_else(|| PlanError::NotFound {
                    kind: "column",
                    name: format!("{n}\" of {} \"{}", def.kind.noun(), def.name),
                })?;
            if slots.contains(&Some(i)) {
                return Err(PlanError::Invalid(format!(
                    "column \"{n}\" specified more than once"
                )));
            }
            slots.push(Some(i));
        }
    }
    let headers: Vec<&str> = slots
        .iter()
        .flatten()
        .filter(|i| def.columns[**i].header.is_some())
        .map(|i| def.columns[*i].name.as_str())
        .collect();
    if !headers.is_empty() {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into HEADER columns: {}",
            headers.join(", ")
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() != slots.len() {
            return Err(PlanError::Invalid(format!(
                "INSERT has {} expressions but {} target columns",
                row.len(),
                slots.len()
            )));
        }
        let mut values: Vec<ScalarValue> = def
            .columns
            .iter()
            .map(|c| ScalarValue::try_from(&c.ty.arrow()))
            .collect::<std::result::Result<_, _>>()?;
        let mut rowtime = None;
        for (slot, expr) in slots.iter().zip(row) {
            match slot {
                None => {
                    let v = literal(expr, &SqlType::Bigint, ROWTIME)?;
                    rowtime = match v {
                        ScalarValue::Int64(v) => v,
                        _ => None,
                    };
                }
                Some(i) => values[*i] = literal(expr, &def.columns[*i].ty, &def.columns[*i].name)?,
            }
        }
        if def.kind == SourceKind::Table {
            let missing: Vec<&str> = def
                .columns
                .iter()
                .zip(&values)
                .filter(|(c, v)| c.key && v.is_null())
                .map(|(c, _)| c.name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(PlanError::Invalid(format!(
                    "Failed to insert values into '{}'. Value for primary key column(s) {} is required for tables",
                    def.name,
                    missing.join(", ")
                )));
            }
        }
        out.push(InsertRow { rowtime, values });
    }
    Ok((def, out))
}

/// Evaluates a constant expression (`ARRAY[1, 2]`, `STRUCT(A := 1)`,
/// `1.5 * 2`, a function call) with DataFusion and casts it to the
/// column's type.
fn constant(expr: &ast::Expr, ty: &SqlType, column: &str) -> Result<ScalarValue> {
    let query = match crate::parser::parse_statement(&format!("SELECT {expr}"))?.statement {
        crate::parser::Statement::Select { query, .. } => query,
        _ => {
            return Err(PlanError::Internal(
                "SELECT did not parse as a query".into(),
            ))
        }
    };
    let plan = logical_plan(&query, &[])?;
    let LogicalPlan::Projection(p) = &plan else {
        return Err(PlanError::Unsupported(format!(
            "unsupported value {expr} in INSERT VALUES"
        )));
    };
    let [value] = p.expr.as_slice() else {
        return Err(PlanError::Internal("expected one expression".into()));
    };
    let physical = datafusion::physical_expr::create_physical_expr(
        value,
        p.input.schema(),
        &datafusion::logical_expr::execution_props::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    let batch = datafusion::arrow::array::RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    crate::functions::take_row_errors();
    let v = physical.evaluate(&batch)?.into_array(1)?;
    if let Some(e) = crate::functions::take_row_errors().into_iter().next() {
        return Err(PlanError::Invalid(e));
    }
    let v = ScalarValue::try_from_array(&v, 0)?;
    let target = ty.arrow();
    if v.data_type() == target {
        return Ok(v);
    }
    v.cast_to(&target).map_err(|_| {
        PlanError::Type(format!(
            "column \"{column}\" is of type {ty} but expression is of type {}",
            SqlType::from_arrow(&v.data_type())
                .map_or_else(|_| v.data_type().to_string(), |t| t.to_string())
        ))
    })
}

/// Converts a literal expression to a value of the column's type.
fn literal(expr: &ast::Expr, ty: &SqlType, column: &str) -> Result<ScalarValue> {
    let simple_type = matches!(
        ty,
        SqlType::Boolean
            | SqlType::Int
            | SqlType::Bigint
            | SqlType::Double
            | SqlType::String
            | SqlType::Timestamp
    );
    let is_literal = match expr {
        ast::Expr::Value(_) => true,
        ast::Expr::UnaryOp { expr, .. } => matches!(expr.as_ref(), ast::Expr::Value(_)),
        _ => false,
    };
    if !simple_type || !is_literal {
        return constant(expr, ty, column);
    }
    let mismatch = |found: &str| {
        PlanError::Type(format!(
            "column \"{column}\" is of type {ty} but expression is of type {found}"
        ))
    };
    let (negative, inner) = match expr {
        ast::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => (true, expr.as_ref()),
        ast::Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => (false, expr.as_ref()),
        other => (false, other),
    };
    let ast::Expr::Value(v) = inner else {
        return Err(PlanError::Unsupported(format!(
            "only literal values are supported in INSERT VALUES, found {expr}"
        )));
    };
    let out_of_range = |n: &str| {
        PlanError::Type(format!(
            "value {n} is out of range for column \"{column}\" of type {ty}"
        ))
    };
    match &v.value {
        Value::Null if !negative => ScalarValue::try_from(&ty.arrow()).map_err(PlanError::from),
        Value::Number(n, _) => {
            let text = if negative { format!("-{n}") } else { n.clone() };
            let is_integer = !text.contains(['.', 'e', 'E']);
            match ty {
                SqlType::Int if is_integer => text
                    .parse::<i32>()
                    .map(|i| ScalarValue::Int32(Some(i)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Bigint if is_integer => text
                    .parse::<i64>()
                    .map(|i| ScalarValue::Int64(Some(i)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Timestamp if is_integer => text
                    .parse::<i64>()
                    .map(|i| ScalarValue::TimestampMillisecond(Some(i), None))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Double => text
                    .parse::<f64>()
                    .map(|f| ScalarValue::Float64(Some(f)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Int | SqlType::Bigint | SqlType::Timestamp => Err(mismatch("DOUBLE")),
                _ => Err(mismatch(if is_integer { "INTEGER" } else { "DOUBLE" })),
            }
        }
        Value::SingleQuotedString(s) if !negative => match ty {
            SqlType::String => Ok(ScalarValue::Utf8(Some(s.clone()))),
            SqlType::Timestamp => ScalarValue::Utf8(Some(s.clone()))
                .cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|_| {
                    PlanError::Type(format!(
                        "invalid TIMESTAMP value '{s}' for column \"{column}\""
                    ))
                }),
            _ => Err(mismatch("STRING")),
        },
        Value::Boolean(b) if !negative => match ty {
            SqlType::Boolean => Ok(ScalarValue::Boolean(Some(*b))),
            _ => Err(mismatch("BOOLEAN")),
        },
        _ => Err(PlanError::Unsupported(format!(
            "unsupported value {expr} in INSERT VALUES"
        ))),
    }
}

/// `CREATE OR REPLACE`: whether `new` may replace `old` in place, as
/// ksqlDB allows. The topic, formats, key and existing value columns stay;
/// value columns may be added at the end. For a query (`old_plan` and
/// `new_plan`), the source, the aggregation and the repartitioning stay
/// too: filters and projections may change.
pub fn check_upgrade(
    old: &SourceDef,
    new: &SourceDef,
    plans: Option<(&StreamPlan, &StreamPlan)>,
) -> Result<()> {
    let refuse = |why: String| {
        Err(PlanError::Invalid(format!(
            "Cannot upgrade data source {}: {why}",
            old.name
        )))
    };
    if old.kind != new.kind {
        return refuse(format!(
            "it is a {}, not a {}",
            old.kind.noun(),
            new.kind.noun()
        ));
    }
    if old.topic != new.topic
        || old.key_format != new.key_format
        || old.value_format != new.value_format
        || old.window != new.window
    {
        return refuse("its topic and formats cannot change".into());
    }
    let old_keys: Vec<&Column> = old.key_columns().collect();
    let new_keys: Vec<&Column> = new.key_columns().collect();
    if old_keys != new_keys {
        return refuse("its key columns cannot change".into());
    }
    let old_values: Vec<&Column> = old.value_columns().collect();
    let new_values: Vec<&Column> = new.value_columns().collect();
    if let Some(c) = old_values
        .iter()
        .enumerate()
        .find_map(|(i, o)| (new_values.get(i) != Some(o)).then_some(o))
    {
        return refuse(format!(
            "existing value columns cannot be removed, reordered or retyped (column {} {})",
            c.name, c.ty
        ));
    }
    if let Some((old_plan, new_plan)) = plans {
        if old_plan.input_names() != new_plan.input_names() {
            return refuse(format!(
                "its query reads {}, the new one {}",
                old_plan.input_names().join(" and "),
                new_plan.input_names().join(" and ")
            ));
        }
        let join_shape = |p: &StreamPlan| {
            p.join.as_ref().map(|j| {
                j.steps()
                    .into_iter()
                    .map(|j| {
                        (
                            j.kind,
                            j.window,
                            j.left.key.to_string(),
                            j.right.key.to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        };
        if join_shape(old_plan) != join_shape(new_plan)
            || old_plan.window.map(|w| w.0) != new_plan.window.map(|w| w.0)
        {
            return refuse("its join and its window cannot change".into());
        }
        let shape = |p: &StreamPlan| -> Vec<String> {
            p.explain(None)
                .into_iter()
                .filter(|l| l.contains("AGGREGATE") || l.contains("REKEY") || l.contains("EXPLODE"))
                .collect()
        };
        if shape(old_plan) != shape(new_plan) {
            return refuse(
                "only its filters and projections may change, not its aggregation, PARTITION BY or table functions"
                    .into(),
            );
        }
    }
    Ok(())
}
