//! `WITH (…)` properties: which are known, and what they say (formats,
//! partitions, windows, timestamps).

use crate::catalog::{Column, Format, WindowKind, WindowSpec};
use crate::error::{PlanError, Result};
use crate::parser::{PropValue, Props};
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
pub(super) fn window_prop(props: &Props) -> Result<Option<WindowSpec>> {
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

pub(super) fn prop<'a>(props: &'a Props, name: &str) -> Option<&'a PropValue> {
    props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

pub(super) fn check_props(props: &Props) -> Result<()> {
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

pub(super) fn partitions_prop(props: &Props) -> Result<Option<u32>> {
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
pub(super) fn positive_prop(props: &Props, name: &str) -> Result<Option<u64>> {
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
pub(super) fn formats(
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
pub(super) fn check_formats(
    key_format: Format,
    value_format: Format,
    columns: &[Column],
) -> Result<()> {
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

/// `WRAP_SINGLE_VALUE=false` for a source with one value column.
pub(super) fn unwrapped_prop(props: &Props, columns: &[Column]) -> Result<bool> {
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
pub(super) fn timestamp_prop(
    props: &Props,
    columns: &[Column],
) -> Result<(Option<String>, Option<String>)> {
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
