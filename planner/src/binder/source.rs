//! `CREATE STREAM|TABLE` over a topic, `ALTER`, and the checks a restart
//! runs on persisted statements (`check_upgrade`).

use std::collections::BTreeSet;

use super::props::{
    check_formats, check_props, formats, partitions_prop, positive_prop, prop, timestamp_prop,
    unwrapped_prop, window_prop, FormatDefaults,
};
use crate::catalog::{
    Catalog, Column, Format, HeaderSource, SourceDef, SourceKind, ROWOFFSET, ROWPARTITION, ROWTIME,
    WINDOWEND, WINDOWSTART,
};
use crate::error::{PlanError, Result};
use crate::parser::{ColumnSpec, PropValue, Props};
use crate::plan::StreamPlan;
use crate::types::SqlType;

/// A declared column may not take a pseudo-column's name.
fn check_not_reserved(name: &str) -> Result<()> {
    if reserved(name) {
        return Err(PlanError::Invalid(format!(
            "'{name}' is a reserved column name. You cannot use it as a name for a column."
        )));
    }
    Ok(())
}

pub(super) fn reserved(name: &str) -> bool {
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
