//! Brook's implementations of ksqlDB scalar functions (those DataFusion
//! lacks or gets different from ksqlDB).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;
use serde_json::Value as Json;

use super::kernels;
use super::udf::{no_variant, value_too_large, RowFn, MAX_VALUE_BYTES};
use crate::datum::{datum_to_json, Datum};
use crate::types::SqlType;

fn err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Execution(msg.into())
}

fn is_str(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn is_int(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

fn is_num(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Null
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

fn int(v: &ScalarValue) -> Option<i64> {
    match Datum::from_scalar(v).ok()? {
        Datum::Int(i) => Some(i),
        _ => None,
    }
}

fn utf8(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

fn string_list(items: Vec<Option<String>>) -> ScalarValue {
    let scalars: Vec<ScalarValue> = items.into_iter().map(ScalarValue::Utf8).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&scalars, &DataType::Utf8))
}

fn check(name: &str, args: &[DataType], ok: bool, ret: DataType) -> Result<DataType> {
    if ok {
        Ok(ret)
    } else {
        Err(no_variant(name, args))
    }
}

// ---------------------------------------------------------------- generic

fn as_value() -> ScalarUDF {
    RowFn::lenient(
        "AS_VALUE",
        |a| match a {
            [t] => Ok(t.clone()),
            _ => Err(no_variant("AS_VALUE", a)),
        },
        |a, _| Ok(a[0].clone()),
    )
}

// ---------------------------------------------------------------- JSON

/// The first JSON value in `s`, ignoring what follows (as Jackson does).
fn parse_json(s: &str) -> Option<Json> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<Json>()
        .next()
        .and_then(|r| r.ok())
}

/// `__brook_like_escape(pattern, c)`: a LIKE pattern escaped with `c`
/// rewritten to escape with `\\`, the only escape DataFusion reads.
/// `STRUCT()`: a struct without fields.
fn empty_struct() -> ScalarUDF {
    RowFn::strict(
        crate::parser::EMPTY_STRUCT,
        |a| {
            check(
                "STRUCT",
                a,
                a.is_empty(),
                DataType::Struct(Default::default()),
            )
        },
        |_, _| {
            Ok(ScalarValue::Struct(Arc::new(
                datafusion::arrow::array::StructArray::new_empty_fields(1, None),
            )))
        },
    )
}

fn like_escape() -> ScalarUDF {
    RowFn::strict(
        "__BROOK_LIKE_ESCAPE",
        |a| {
            check(
                "LIKE",
                a,
                a.len() == 2 && a.iter().all(is_str),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(p), Some(esc)) = (text(&a[0]), text(&a[1]).and_then(|e| e.chars().next()))
            else {
                return Ok(ScalarValue::Utf8(None));
            };
            let mut out = String::with_capacity(p.len());
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                if c == esc {
                    if let Some(next) = chars.next() {
                        out.push('\\');
                        out.push(next);
                    }
                } else if c == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(c);
                }
            }
            Ok(utf8(out))
        },
    )
}

/// ksqlDB's ARRAY_SORT: ascending by default, `'DESC'` for descending;
/// NULL elements go last either way.
fn array_sort() -> ScalarUDF {
    RowFn::strict(
        "ARRAY_SORT",
        |a| {
            check(
                "ARRAY_SORT",
                a,
                matches!(a.first(), Some(DataType::List(_) | DataType::Null))
                    && (a.len() == 1 || a.len() == 2 && is_str(&a[1])),
                a.first().cloned().unwrap_or(DataType::Null),
            )
        },
        |a, _| {
            let ty = a[0].data_type();
            let DataType::List(item) = &ty else {
                return Ok(a[0].clone());
            };
            let desc = match a.get(1).and_then(text) {
                None => false,
                Some(d) if d.eq_ignore_ascii_case("asc") => false,
                Some(d) if d.eq_ignore_ascii_case("desc") => true,
                Some(_) => return ScalarValue::try_from(&ty),
            };
            let Datum::List(mut items) =
                Datum::from_scalar(&a[0]).map_err(|e| err(e.to_string()))?
            else {
                return Ok(a[0].clone());
            };
            items.sort_by(|x, y| match (x.is_null(), y.is_null()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => y.cmp(x),
                _ => x.cmp(y),
            });
            let scalars = items
                .iter()
                .map(|d| d.to_scalar(item.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                &scalars,
                item.data_type(),
            )))
        },
    )
}

/// ksqlDB's ARRAY_JOIN: primitive elements as Java writes them, NULL
/// elements as `null`, `,` by default and nothing for a NULL delimiter.
fn array_join() -> ScalarUDF {
    RowFn::lenient(
        "ARRAY_JOIN",
        |a| {
            let primitive = |t: &DataType| {
                matches!(t, DataType::List(f) if !matches!(
                    f.data_type(),
                    DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
                ))
            };
            check(
                "ARRAY_JOIN",
                a,
                (a.len() == 1 || a.len() == 2 && is_str(&a[1]))
                    && (primitive(&a[0]) || a[0] == DataType::Null),
                DataType::Utf8,
            )
        },
        |a, _| {
            let ty = match a[0].data_type() {
                DataType::Null => return Ok(ScalarValue::Utf8(None)),
                t => SqlType::from_arrow(&t).map_err(|e| err(e.to_string()))?,
            };
            let (Datum::List(items), SqlType::Array(item)) = (
                Datum::from_scalar(&a[0]).map_err(|e| err(e.to_string()))?,
                ty,
            ) else {
                return Ok(ScalarValue::Utf8(None));
            };
            let delimiter = match a.get(1) {
                None => ",",
                Some(d) => text(d).unwrap_or(""),
            };
            let parts: Vec<String> = items
                .iter()
                .map(|d| super::cast::java_text(d, &item))
                .collect();
            Ok(utf8(parts.join(delimiter)))
        },
    )
}

fn to_json_string() -> ScalarUDF {
    RowFn::lenient(
        "TO_JSON_STRING",
        |a| check("TO_JSON_STRING", a, a.len() == 1, DataType::Utf8),
        |a, _| {
            let ty = match a[0].data_type() {
                DataType::Null => SqlType::String,
                t => SqlType::from_arrow(&t).map_err(|e| err(e.to_string()))?,
            };
            let d = Datum::from_scalar(&a[0]).map_err(|e| err(e.to_string()))?;
            Ok(utf8(json_text_value(&d, &ty).to_string()))
        },
    )
}

/// TO_JSON_STRING's JSON of a value: as the JSON format writes it, except
/// that DATE, TIME and TIMESTAMP are ISO-8601 strings.
fn json_text_value(d: &Datum, ty: &SqlType) -> Json {
    match (d, ty) {
        (Datum::Int(days), SqlType::Date) => {
            NaiveDate::from_num_days_from_ce_opt(i32::try_from(*days + 719_163).unwrap_or(i32::MAX))
                .map_or(Json::Null, |d| {
                    Json::String(d.format("%Y-%m-%d").to_string())
                })
        }
        (Datum::Int(ms), SqlType::Time) => NaiveTime::from_num_seconds_from_midnight_opt(
            u32::try_from(ms.div_euclid(1000)).unwrap_or(u32::MAX),
            u32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        )
        .map_or(Json::Null, |t| {
            Json::String(t.format("%H:%M:%S").to_string())
        }),
        (Datum::Int(ms), SqlType::Timestamp) => DateTime::from_timestamp_millis(*ms)
            .map_or(Json::Null, |t| {
                Json::String(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
            }),
        (Datum::List(items), SqlType::Array(e)) => {
            Json::Array(items.iter().map(|v| json_text_value(v, e)).collect())
        }
        _ => datum_to_json(d, ty),
    }
}

/// Follows a JSONPath like `$.a.b[0]` or `$['a']`.
fn json_path<'j>(root: &'j Json, path: &str) -> Option<&'j Json> {
    let rest = path.trim().strip_prefix('$')?;
    let mut cur = root;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                cur = cur.as_object()?.get(&key)?;
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                if let Some(key) = inner
                    .strip_prefix('\'')
                    .and_then(|k| k.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
                {
                    cur = cur.as_object()?.get(key)?;
                } else {
                    cur = cur.as_array()?.get(inner.parse::<usize>().ok()?)?;
                }
            }
            _ => return None,
        }
    }
    Some(cur)
}

fn extract_json_field() -> ScalarUDF {
    RowFn::strict(
        "EXTRACTJSONFIELD",
        |a| {
            check(
                "EXTRACTJSONFIELD",
                a,
                a.len() == 2 && is_str(&a[0]) && is_str(&a[1]),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(s), Some(path)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            let found = parse_json(s).and_then(|j| json_path(&j, path).cloned());
            Ok(ScalarValue::Utf8(match found {
                None | Some(Json::Null) => None,
                Some(Json::String(s)) => Some(s),
                Some(other) => Some(other.to_string()),
            }))
        },
    )
}

fn is_json_string() -> ScalarUDF {
    RowFn::lenient(
        "IS_JSON_STRING",
        |a| {
            check(
                "IS_JSON_STRING",
                a,
                a.len() == 1 && is_str(&a[0]),
                DataType::Boolean,
            )
        },
        |a, _| {
            Ok(ScalarValue::Boolean(Some(
                text(&a[0]).is_some_and(|s| serde_json::from_str::<Json>(s).is_ok()),
            )))
        },
    )
}

fn json_array_length() -> ScalarUDF {
    RowFn::strict(
        "JSON_ARRAY_LENGTH",
        |a| {
            check(
                "JSON_ARRAY_LENGTH",
                a,
                a.len() == 1 && is_str(&a[0]),
                DataType::Int32,
            )
        },
        |a, _| {
            let n = text(&a[0])
                .and_then(|s| serde_json::from_str::<Json>(s).ok())
                .and_then(|j| j.as_array().map(|a| a.len() as i32));
            Ok(ScalarValue::Int32(n))
        },
    )
}

fn json_keys() -> ScalarUDF {
    RowFn::strict(
        "JSON_KEYS",
        |a| {
            check(
                "JSON_KEYS",
                a,
                a.len() == 1 && is_str(&a[0]),
                list_of(DataType::Utf8),
            )
        },
        |a, ret| match text(&a[0]).and_then(|s| serde_json::from_str::<Json>(s).ok()) {
            Some(Json::Object(m)) => Ok(string_list(m.keys().map(|k| Some(k.clone())).collect())),
            _ => ScalarValue::try_from(ret),
        },
    )
}

fn json_items() -> ScalarUDF {
    RowFn::strict(
        "JSON_ITEMS",
        |a| {
            check(
                "JSON_ITEMS",
                a,
                a.len() == 1 && is_str(&a[0]),
                list_of(DataType::Utf8),
            )
        },
        |a, ret| match text(&a[0]).and_then(|s| serde_json::from_str::<Json>(s).ok()) {
            Some(Json::Array(items)) => Ok(string_list(
                items.iter().map(|i| Some(i.to_string())).collect(),
            )),
            _ => ScalarValue::try_from(ret),
        },
    )
}

fn json_records() -> ScalarUDF {
    RowFn::strict(
        "JSON_RECORDS",
        |a| {
            check(
                "JSON_RECORDS",
                a,
                a.len() == 1 && is_str(&a[0]),
                crate::types::map_type(DataType::Utf8, DataType::Utf8),
            )
        },
        |a, ret| match text(&a[0]).and_then(|s| serde_json::from_str::<Json>(s).ok()) {
            Some(Json::Object(m)) => Datum::Map(
                m.iter()
                    .map(|(k, v)| (Datum::Str(k.clone()), Datum::Str(v.to_string())))
                    .collect(),
            )
            .to_scalar(ret)
            .map_err(|e| err(e.to_string())),
            _ => ScalarValue::try_from(ret),
        },
    )
}

fn json_concat() -> ScalarUDF {
    RowFn::lenient(
        "JSON_CONCAT",
        |a| {
            check(
                "JSON_CONCAT",
                a,
                !a.is_empty() && a.iter().all(is_str),
                DataType::Utf8,
            )
        },
        |a, _| {
            let mut parsed = Vec::with_capacity(a.len());
            for v in a {
                match text(v).and_then(|s| serde_json::from_str::<Json>(s).ok()) {
                    Some(j) => parsed.push(j),
                    None => return Ok(ScalarValue::Utf8(None)),
                }
            }
            if parsed.iter().all(Json::is_object) {
                let mut out = serde_json::Map::new();
                for j in parsed {
                    if let Json::Object(m) = j {
                        out.extend(m);
                    }
                }
                return Ok(utf8(Json::Object(out).to_string()));
            }
            let mut out = Vec::new();
            for j in parsed {
                match j {
                    Json::Array(items) => out.extend(items),
                    other => out.push(other),
                }
            }
            Ok(utf8(Json::Array(out).to_string()))
        },
    )
}

// ---------------------------------------------------------------- strings

fn split() -> ScalarUDF {
    RowFn::strict_batched(
        "SPLIT",
        |a| {
            if a.len() == 2 && is_bytes(&a[0]) && (is_bytes(&a[1]) || a[1] == DataType::Null) {
                return Ok(list_of(DataType::Binary));
            }
            check(
                "SPLIT",
                a,
                a.len() == 2 && is_str(&a[0]) && is_str(&a[1]),
                list_of(DataType::Utf8),
            )
        },
        |a, _| {
            if let (Some(b), Some(d)) = (raw_bytes(&a[0]), raw_bytes(&a[1])) {
                let parts: Vec<ScalarValue> = split_bytes(b, d)
                    .into_iter()
                    .map(|p| ScalarValue::Binary(Some(p.to_vec())))
                    .collect();
                return Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                    &parts,
                    &DataType::Binary,
                )));
            }
            let (Some(s), Some(d)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Null);
            };
            let parts: Vec<Option<String>> = if s.is_empty() {
                vec![Some(String::new())]
            } else if d.is_empty() {
                s.chars().map(|c| Some(c.to_string())).collect()
            } else {
                s.split(d).map(|p| Some(p.to_string())).collect()
            };
            Ok(string_list(parts))
        },
        kernels::split,
    )
}

/// Splits bytes on a delimiter the way ksqlDB does: an empty delimiter
/// yields each byte on its own.
fn split_bytes<'a>(b: &'a [u8], d: &[u8]) -> Vec<&'a [u8]> {
    if d.is_empty() {
        return if b.is_empty() {
            vec![b]
        } else {
            b.chunks(1).collect()
        };
    }
    let mut parts = Vec::new();
    let mut from = 0;
    let mut i = 0;
    while i + d.len() <= b.len() {
        if &b[i..i + d.len()] == d {
            parts.push(&b[from..i]);
            i += d.len();
            from = i;
        } else {
            i += 1;
        }
    }
    parts.push(&b[from..]);
    parts
}

/// A compiled pattern. The functions run per row, usually with the same
/// pattern: the last few compiled are kept per thread (a `Regex` clone
/// shares its program).
pub(super) fn regex(p: &str) -> Result<regex::Regex> {
    const KEPT: usize = 32;
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(re) = COMPILED.with(|c| c.borrow().get(p).cloned()) {
        return Ok(re);
    }
    let re =
        regex::Regex::new(p).map_err(|e| err(format!("invalid regular expression {p}: {e}")))?;
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEPT {
            c.clear();
        }
        c.insert(p.to_string(), re.clone());
    });
    Ok(re)
}

fn regexp_extract() -> ScalarUDF {
    RowFn::strict_batched(
        "REGEXP_EXTRACT",
        |a| {
            check(
                "REGEXP_EXTRACT",
                a,
                (a.len() == 2 || a.len() == 3 && is_int(&a[2])) && is_str(&a[0]) && is_str(&a[1]),
                DataType::Utf8,
            )
        },
        |a, _| {
            // ksqlDB's order: the pattern comes first.
            let (Some(p), Some(s)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            let group = a.get(2).and_then(int).unwrap_or(0);
            let re = regex(p)?;
            Ok(ScalarValue::Utf8(re.captures(s).and_then(|c| {
                c.get(usize::try_from(group).ok()?)
                    .map(|m| m.as_str().to_string())
            })))
        },
        kernels::regexp_extract,
    )
}

fn regexp_extract_all() -> ScalarUDF {
    RowFn::strict(
        "REGEXP_EXTRACT_ALL",
        |a| {
            check(
                "REGEXP_EXTRACT_ALL",
                a,
                (a.len() == 2 || a.len() == 3 && is_int(&a[2])) && is_str(&a[0]) && is_str(&a[1]),
                list_of(DataType::Utf8),
            )
        },
        |a, _| {
            let (Some(p), Some(s)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Null);
            };
            let group = usize::try_from(a.get(2).and_then(int).unwrap_or(0)).unwrap_or(0);
            let re = regex(p)?;
            Ok(string_list(
                re.captures_iter(s)
                    .map(|c| c.get(group).map(|m| m.as_str().to_string()))
                    .collect(),
            ))
        },
    )
}

fn regexp_split_to_array() -> ScalarUDF {
    RowFn::strict(
        "REGEXP_SPLIT_TO_ARRAY",
        |a| {
            check(
                "REGEXP_SPLIT_TO_ARRAY",
                a,
                a.len() == 2 && is_str(&a[0]) && is_str(&a[1]),
                list_of(DataType::Utf8),
            )
        },
        |a, _| {
            let (Some(s), Some(p)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Null);
            };
            let re = regex(p)?;
            Ok(string_list(
                re.split(s).map(|p| Some(p.to_string())).collect(),
            ))
        },
    )
}

fn regexp_replace() -> ScalarUDF {
    RowFn::strict(
        "REGEXP_REPLACE",
        |a| {
            check(
                "REGEXP_REPLACE",
                a,
                a.len() == 3 && a.iter().all(is_str),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(s), Some(p), Some(r)) = (text(&a[0]), text(&a[1]), text(&a[2])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            // Java's $1 group references are regex's ${1}.
            let r = java_replacement(r);
            let re = regex(p)?;
            // Each match adds at most the replacement and what its groups
            // expand to (at most the whole input each).
            let groups = r.matches('$').count() as u128;
            let per_match = r.len() as u128 + groups * s.len() as u128;
            let bound = s.len() as u128 + re.find_iter(s).count() as u128 * per_match;
            if bound > MAX_VALUE_BYTES as u128 {
                return Err(value_too_large("REGEXP_REPLACE", bound));
            }
            Ok(utf8(re.replace_all(s, r.as_str()).into_owned()))
        },
    )
}

/// ksqlDB's REPLACE (Java's `String.replace`): every occurrence of `from`,
/// left to right; an empty `from` matches before every character and at
/// the end. The result's size is known before it is built.
fn replace() -> ScalarUDF {
    RowFn::strict_batched(
        "REPLACE",
        |a| {
            check(
                "REPLACE",
                a,
                a.len() == 3 && a.iter().all(is_str),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(s), Some(from), Some(to)) = (text(&a[0]), text(&a[1]), text(&a[2])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            let matches = if from.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(from).count()
            } as u128;
            let bytes = s.len() as u128 + matches * to.len() as u128;
            if bytes > MAX_VALUE_BYTES as u128 {
                return Err(value_too_large("REPLACE", bytes));
            }
            Ok(utf8(s.replace(from, to)))
        },
        kernels::replace,
    )
}

fn java_replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

fn instr() -> ScalarUDF {
    RowFn::strict(
        "INSTR",
        |a| {
            check(
                "INSTR",
                a,
                (2..=4).contains(&a.len())
                    && is_str(&a[0])
                    && is_str(&a[1])
                    && a[2..].iter().all(is_int),
                DataType::Int32,
            )
        },
        |a, _| {
            let (Some(s), Some(sub)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Int32(None));
            };
            let chars: Vec<char> = s.chars().collect();
            let needle: Vec<char> = sub.chars().collect();
            let position = a.get(2).and_then(int).unwrap_or(1);
            let occurrence = a.get(3).and_then(int).unwrap_or(1).max(1);
            let n = chars.len() as i64;
            let matches_at = |i: i64| -> bool {
                i >= 0
                    && (i as usize) + needle.len() <= chars.len()
                    && chars[i as usize..i as usize + needle.len()] == needle[..]
            };
            let mut found = 0;
            if position > 0 {
                let mut i = position - 1;
                while i <= n - needle.len() as i64 {
                    if matches_at(i) {
                        found += 1;
                        if found == occurrence {
                            return Ok(ScalarValue::Int32(Some(i as i32 + 1)));
                        }
                    }
                    i += 1;
                }
            } else if position < 0 {
                let mut i = n + position;
                while i >= 0 {
                    if matches_at(i) {
                        found += 1;
                        if found == occurrence {
                            return Ok(ScalarValue::Int32(Some(i as i32 + 1)));
                        }
                    }
                    i -= 1;
                }
            }
            Ok(ScalarValue::Int32(Some(0)))
        },
    )
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn raw_bytes(v: &ScalarValue) -> Option<&[u8]> {
    match v {
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => Some(b),
        _ => None,
    }
}

/// ksqlDB's SUBSTRING window over `n` items: 1-based, a negative position
/// counts from the end, 0 means 1; returns the half-open range kept.
fn substring_range(n: usize, pos: i64, len: Option<i64>) -> std::ops::Range<usize> {
    let n = n as i64;
    let start = if pos > 0 {
        pos - 1
    } else if pos < 0 {
        (n + pos).max(0)
    } else {
        0
    };
    let end = match len {
        Some(len) => (start + len.max(0)).min(n),
        None => n,
    };
    if start >= n || end <= start {
        return 0..0;
    }
    start as usize..end as usize
}

fn substring() -> ScalarUDF {
    RowFn::strict(
        "SUBSTRING",
        |a| {
            let ok = (a.len() == 2 || a.len() == 3) && a[1..].iter().all(is_int);
            if ok && is_bytes(&a[0]) {
                return Ok(DataType::Binary);
            }
            check("SUBSTRING", a, ok && is_str(&a[0]), DataType::Utf8)
        },
        |a, _| {
            let pos = int(&a[1]).unwrap_or(1);
            let len = a.get(2).and_then(int);
            if let Some(b) = raw_bytes(&a[0]) {
                let range = substring_range(b.len(), pos, len);
                return Ok(ScalarValue::Binary(Some(b[range].to_vec())));
            }
            let Some(s) = text(&a[0]) else {
                return Ok(ScalarValue::Utf8(None));
            };
            let chars: Vec<char> = s.chars().collect();
            let range = substring_range(chars.len(), pos, len);
            Ok(utf8(chars[range].iter().collect::<String>()))
        },
    )
}

fn mask_char(c: char, with: &[Option<char>; 4]) -> char {
    let pick = if c.is_ascii_uppercase() {
        with[0]
    } else if c.is_ascii_lowercase() {
        with[1]
    } else if c.is_ascii_digit() {
        with[2]
    } else {
        with[3]
    };
    pick.unwrap_or(c)
}

/// Masks the characters of `a[0]` at the positions `masked(i, len, n)`
/// selects; `n` is `a[1]` when `counted`. The replacement characters follow
/// (X, x, n, - by default; NULL keeps that class unmasked).
fn mask_with(
    a: &[ScalarValue],
    counted: bool,
    masked: fn(usize, usize, usize) -> bool,
) -> Result<ScalarValue> {
    let Some(s) = text(&a[0]) else {
        return Ok(ScalarValue::Utf8(None));
    };
    let n = if counted {
        int(&a[1]).unwrap_or(0).max(0) as usize
    } else {
        0
    };
    let from = if counted { 2 } else { 1 };
    let mut with = [None; 4];
    for (i, default) in ['X', 'x', 'n', '-'].into_iter().enumerate() {
        with[i] = match a.get(from + i) {
            None => Some(default),
            Some(v) => text(v).and_then(|s| s.chars().next()),
        };
    }
    let len = s.chars().count();
    Ok(utf8(
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if masked(i, len, n) {
                    mask_char(c, &with)
                } else {
                    c
                }
            })
            .collect::<String>(),
    ))
}

fn mask(name: &'static str) -> ScalarUDF {
    let eval: super::udf::EvalFn = match name {
        "MASK" => |a, _| mask_with(a, false, |_, _, _| true),
        "MASK_LEFT" => |a, _| mask_with(a, true, |i, _, n| i < n),
        "MASK_RIGHT" => |a, _| mask_with(a, true, |i, len, n| i + n >= len),
        "MASK_KEEP_LEFT" => |a, _| mask_with(a, true, |i, _, n| i >= n),
        _ => |a, _| mask_with(a, true, |i, len, n| i + n < len),
    };
    let ret: super::udf::ReturnFn = if name == "MASK" {
        |a| {
            check(
                "MASK",
                a,
                (1..=5).contains(&a.len()) && a.iter().all(is_str),
                DataType::Utf8,
            )
        }
    } else {
        |a| {
            check(
                "MASK",
                a,
                (2..=6).contains(&a.len())
                    && is_str(&a[0])
                    && is_int(&a[1])
                    && a[2..].iter().all(is_str),
                DataType::Utf8,
            )
        }
    };
    // Not strict: a NULL replacement means "leave that class as is".
    RowFn::lenient(name, ret, eval)
}

// ---------------------------------------------------------------- bytes

fn to_bytes() -> ScalarUDF {
    RowFn::strict(
        "TO_BYTES",
        |a| {
            check(
                "TO_BYTES",
                a,
                a.len() == 2 && is_str(&a[0]) && is_str(&a[1]),
                DataType::Binary,
            )
        },
        |a, _| {
            let (Some(s), Some(enc)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Binary(None));
            };
            Ok(ScalarValue::Binary(Some(decode_text(s, enc)?)))
        },
    )
}

fn decode_text(s: &str, enc: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    match enc.to_ascii_lowercase().as_str() {
        "hex" => (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err(format!("invalid hex string: {s}")))
            })
            .collect(),
        "utf8" | "ascii" => Ok(s.as_bytes().to_vec()),
        "base64" => crate::datum::B64
            .decode(s)
            .map_err(|_| err(format!("invalid base64 string: {s}"))),
        other => Err(err(format!(
            "Supported input encodings are: hex, utf8, ascii and base64, found {other}"
        ))),
    }
}

fn from_bytes() -> ScalarUDF {
    RowFn::strict(
        "FROM_BYTES",
        |a| {
            check(
                "FROM_BYTES",
                a,
                a.len() == 2 && matches!(a[0], DataType::Binary | DataType::Null) && is_str(&a[1]),
                DataType::Utf8,
            )
        },
        |a, _| {
            use base64::Engine as _;
            let (ScalarValue::Binary(Some(b)), Some(enc)) = (&a[0], text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            Ok(utf8(match enc.to_ascii_lowercase().as_str() {
                "hex" => b.iter().map(|x| format!("{x:02X}")).collect::<String>(),
                "utf8" | "ascii" => String::from_utf8_lossy(b).into_owned(),
                "base64" => crate::datum::B64.encode(b),
                other => {
                    return Err(err(format!(
                        "Supported output encodings are: hex, utf8, ascii and base64, found {other}"
                    )))
                }
            }))
        },
    )
}

/// The `N` bytes of `a[0]` and whether `a[1]` asks for LITTLE_ENDIAN.
fn fixed_bytes<const N: usize>(a: &[ScalarValue]) -> Result<Option<([u8; N], bool)>> {
    let ScalarValue::Binary(Some(b)) = &a[0] else {
        return Ok(None);
    };
    let bytes: [u8; N] = b.as_slice().try_into().map_err(|_| {
        err(format!(
            "Number of bytes must be equal to {N}, but found {}",
            b.len()
        ))
    })?;
    let little = a
        .get(1)
        .and_then(text)
        .is_some_and(|o| o.eq_ignore_ascii_case("LITTLE_ENDIAN"));
    Ok(Some((bytes, little)))
}

fn number_from_bytes(name: &'static str) -> ScalarUDF {
    let (ret, eval): (super::udf::ReturnFn, super::udf::EvalFn) = match name {
        "INT_FROM_BYTES" => (
            |a| {
                check(
                    "INT_FROM_BYTES",
                    a,
                    (1..=2).contains(&a.len()),
                    DataType::Int32,
                )
            },
            |a, _| {
                Ok(ScalarValue::Int32(fixed_bytes::<4>(a)?.map(
                    |(b, little)| {
                        if little {
                            i32::from_le_bytes(b)
                        } else {
                            i32::from_be_bytes(b)
                        }
                    },
                )))
            },
        ),
        "BIGINT_FROM_BYTES" => (
            |a| {
                check(
                    "BIGINT_FROM_BYTES",
                    a,
                    (1..=2).contains(&a.len()),
                    DataType::Int64,
                )
            },
            |a, _| {
                Ok(ScalarValue::Int64(fixed_bytes::<8>(a)?.map(
                    |(b, little)| {
                        if little {
                            i64::from_le_bytes(b)
                        } else {
                            i64::from_be_bytes(b)
                        }
                    },
                )))
            },
        ),
        _ => (
            |a| {
                check(
                    "DOUBLE_FROM_BYTES",
                    a,
                    (1..=2).contains(&a.len()),
                    DataType::Float64,
                )
            },
            |a, _| {
                Ok(ScalarValue::Float64(fixed_bytes::<8>(a)?.map(
                    |(b, little)| {
                        if little {
                            f64::from_le_bytes(b)
                        } else {
                            f64::from_be_bytes(b)
                        }
                    },
                )))
            },
        ),
    };
    RowFn::strict(name, ret, eval)
}

// ---------------------------------------------------------------- math

fn ln_log() -> ScalarUDF {
    RowFn::strict(
        "LOG",
        |a| {
            check(
                "LOG",
                a,
                (1..=2).contains(&a.len()) && a.iter().all(is_num),
                DataType::Float64,
            )
        },
        |a, _| {
            let x = Datum::from_scalar(a.last().unwrap_or(&ScalarValue::Null))
                .ok()
                .and_then(|d| d.as_f64());
            let base = if a.len() == 2 {
                Datum::from_scalar(&a[0]).ok().and_then(|d| d.as_f64())
            } else {
                Some(std::f64::consts::E)
            };
            // ksqlDB: NaN for a negative value or a base that is not
            // positive or is 1; -Infinity for 0.
            Ok(ScalarValue::Float64(match (x, base) {
                (Some(x), Some(b)) if x < 0.0 || b <= 0.0 || b == 1.0 => Some(f64::NAN),
                (Some(0.0), _) => Some(f64::NEG_INFINITY),
                (Some(x), Some(b)) => Some(x.ln() / b.ln()),
                _ => None,
            }))
        },
    )
}

/// `unscaled / 10^scale` rounded (or, with `trunc`, truncated) to
/// `places` decimal places, a negative count rounding to tens, hundreds…;
/// the result keeps the scale. Ties round toward positive infinity, as
/// ksqlDB does (HALF_UP above zero, HALF_DOWN below).
fn round_unscaled(v: i128, scale: i32, places: i32, trunc: bool) -> Option<i128> {
    let drop = scale.checked_sub(places)?;
    if drop <= 0 {
        return Some(v);
    }
    let Some(p) = u32::try_from(drop).ok().and_then(|d| 10i128.checked_pow(d)) else {
        return Some(0);
    };
    let (q, r) = (v / p, (v % p).abs());
    let q = if trunc || r < p - r {
        q
    } else if r > p - r || v > 0 {
        q + v.signum()
    } else {
        q
    };
    q.checked_mul(p)
}

/// A DOUBLE rounded or truncated to `places` decimal places through its
/// shortest decimal text, as Java's `BigDecimal.valueOf` sees it.
fn round_double(x: f64, places: i32, trunc: bool) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let text = format!("{x}");
    let (int_part, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = format!("{int_part}{frac}");
    let (Ok(v), Ok(scale)) = (digits.parse::<i128>(), i32::try_from(frac.len())) else {
        let f = 10f64.powi(places);
        return if trunc {
            (x * f).trunc() / f
        } else {
            (x * f + 0.5).floor() / f
        };
    };
    match round_unscaled(v, scale, places, trunc) {
        Some(r) => format!("{r}e-{scale}").parse().unwrap_or(x),
        None => x,
    }
}

/// ksqlDB's ROUND and TRUNC: INT and BIGINT unchanged; DOUBLE to BIGINT,
/// or to a DOUBLE with the given decimal places; DECIMAL to a whole
/// DECIMAL, or to the same type with the given places.
fn round_trunc(name: &'static str) -> ScalarUDF {
    let eval: super::udf::EvalFn = if name == "TRUNC" {
        |a, ret| round_eval(a, ret, true)
    } else {
        |a, ret| round_eval(a, ret, false)
    };
    let ret: super::udf::ReturnFn = if name == "TRUNC" {
        |a| round_type("TRUNC", a)
    } else {
        |a| round_type("ROUND", a)
    };
    RowFn::strict(name, ret, eval)
}

fn round_type(name: &str, a: &[DataType]) -> Result<DataType> {
    let places = a.len() == 2 && is_int(&a[1]);
    match a.first() {
        Some(DataType::Int32) if a.len() == 1 => Ok(DataType::Int32),
        Some(t) if t.is_integer() && a.len() == 1 => Ok(DataType::Int64),
        Some(t) if (t.is_integer() || t.is_floating()) && places => Ok(DataType::Float64),
        Some(DataType::Float64 | DataType::Float32 | DataType::Null) if a.len() == 1 => {
            Ok(DataType::Int64)
        }
        Some(DataType::Null) if places => Ok(DataType::Float64),
        Some(DataType::Decimal128(p, s)) if a.len() == 1 => {
            let whole = i32::from(*p) - i32::from(*s) + i32::from(name == "ROUND");
            Ok(DataType::Decimal128(whole.clamp(1, 38) as u8, 0))
        }
        Some(d @ DataType::Decimal128(..)) if places => Ok(d.clone()),
        _ => Err(no_variant(name, a)),
    }
}

fn round_eval(a: &[ScalarValue], ret: &DataType, trunc: bool) -> Result<ScalarValue> {
    let places = match a.get(1) {
        Some(p) => match int(p) {
            Some(p) => Some(i32::try_from(p).unwrap_or(if p < 0 { i32::MIN } else { i32::MAX })),
            None => return ScalarValue::try_from(ret),
        },
        None => None,
    };
    match (&a[0], ret) {
        (ScalarValue::Decimal128(Some(v), _, s), DataType::Decimal128(rp, rs)) => {
            let s = i32::from(*s);
            let r = round_unscaled(*v, s, places.unwrap_or(0), trunc)
                .ok_or_else(|| err("numeric value out of range"))?;
            // Rescale to the result type's scale (0 when no places given).
            let r = if places.is_none() {
                r / 10i128.pow(s as u32)
            } else {
                r
            };
            Ok(ScalarValue::Decimal128(Some(r), *rp, *rs))
        }
        (v, DataType::Int32) => Ok(ScalarValue::Int32(int(v).map(|i| i as i32))),
        (v, DataType::Int64) if v.data_type().is_integer() => Ok(ScalarValue::Int64(int(v))),
        (v, DataType::Int64) => Ok(ScalarValue::Int64(num(v).map(|x| {
            if trunc {
                x.trunc() as i64
            } else {
                (x + 0.5).floor() as i64
            }
        }))),
        (v, _) => Ok(ScalarValue::Float64(
            num(v).map(|x| round_double(x, places.unwrap_or(0), trunc)),
        )),
    }
}

fn float_fn(name: &'static str) -> ScalarUDF {
    let eval: super::udf::EvalFn = match name {
        "SQRT" => |a, _| Ok(ScalarValue::Float64(num(&a[0]).map(f64::sqrt))),
        "LN" => |a, _| Ok(ScalarValue::Float64(num(&a[0]).map(f64::ln))),
        "EXP" => |a, _| Ok(ScalarValue::Float64(num(&a[0]).map(f64::exp))),
        _ => |a, _| Ok(ScalarValue::Float64(num(&a[0]).map(f64::cbrt))),
    };
    RowFn::strict(
        name,
        |a| check("MATH", a, a.len() == 1 && is_num(&a[0]), DataType::Float64),
        eval,
    )
}

fn num(v: &ScalarValue) -> Option<f64> {
    Datum::from_scalar(v).ok()?.as_f64()
}

fn sign() -> ScalarUDF {
    RowFn::strict(
        "SIGN",
        |a| check("SIGN", a, a.len() == 1 && is_num(&a[0]), DataType::Int32),
        |a, _| {
            Ok(ScalarValue::Int32(num(&a[0]).map(|x| {
                if x > 0.0 {
                    1
                } else if x < 0.0 {
                    -1
                } else {
                    0
                }
            })))
        },
    )
}

/// ksqlDB's LPAD / RPAD: pads (or truncates) to `length` characters; a
/// negative length or an empty padding gives NULL.
fn pad(left: bool) -> ScalarUDF {
    fn ret(a: &[DataType], name: &str) -> Result<DataType> {
        let ok = a.len() == 3 && is_str(&a[0]) && is_int(&a[1]) && is_str(&a[2]);
        check(name, a, ok, DataType::Utf8)
    }
    fn eval(a: &[ScalarValue], left: bool) -> Result<ScalarValue> {
        let (Some(s), Some(len), Some(padding)) = (text(&a[0]), int(&a[1]), text(&a[2])) else {
            return Ok(ScalarValue::Utf8(None));
        };
        let Ok(len) = usize::try_from(len) else {
            return Ok(ScalarValue::Utf8(None));
        };
        if len > MAX_VALUE_BYTES {
            return Err(value_too_large(
                if left { "LPAD" } else { "RPAD" },
                len as u128,
            ));
        }
        if padding.is_empty() {
            return Ok(ScalarValue::Utf8(None));
        }
        let chars: Vec<char> = s.chars().collect();
        if chars.len() >= len {
            return Ok(utf8(chars[..len].iter().collect::<String>()));
        }
        let fill: String = padding.chars().cycle().take(len - chars.len()).collect();
        Ok(utf8(if left {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }))
    }
    if left {
        RowFn::strict("LPAD", |a| ret(a, "LPAD"), |a, _| eval(a, true))
    } else {
        RowFn::strict("RPAD", |a| ret(a, "RPAD"), |a, _| eval(a, false))
    }
}

// ---------------------------------------------------------------- collections

/// `EXPLODE` / `CUBE_EXPLODE` for planning: their type is the type of one
/// output value. The stream planner moves each call into a table-function
/// step; a call anywhere else (WHERE, a pull query) reaches this and fails.
fn table_function(name: &'static str) -> ScalarUDF {
    fn explode_type(a: &[DataType]) -> Result<DataType> {
        match a {
            [DataType::List(f)] => Ok(f.data_type().clone()),
            _ => Err(no_variant("EXPLODE", a)),
        }
    }
    fn cube_type(a: &[DataType]) -> Result<DataType> {
        match a {
            [t @ DataType::List(_)] => Ok(t.clone()),
            _ => Err(no_variant("CUBE_EXPLODE", a)),
        }
    }
    let ret: super::udf::ReturnFn = if name == "EXPLODE" {
        explode_type
    } else {
        cube_type
    };
    RowFn::lenient(name, ret, |_, _| {
        Err(err(
            "table functions can only be used in the SELECT list of a persistent or push query",
        ))
    })
}

fn generate_series() -> ScalarUDF {
    RowFn::strict(
        "GENERATE_SERIES",
        |a| {
            let ok = (2..=3).contains(&a.len()) && a.iter().all(is_int);
            let elem = if a.contains(&DataType::Int64) {
                DataType::Int64
            } else {
                DataType::Int32
            };
            check("GENERATE_SERIES", a, ok, list_of(elem))
        },
        |a, ret| {
            let (Some(start), Some(end)) = (int(&a[0]), int(&a[1])) else {
                return ScalarValue::try_from(ret);
            };
            let step = match a.get(2).and_then(int) {
                Some(0) => return Err(err("GENERATE_SERIES step cannot be zero")),
                Some(s) => s,
                None if end >= start => 1,
                None => -1,
            };
            if (step > 0 && end < start) || (step < 0 && end > start) {
                return Err(err("GENERATE_SERIES step has wrong sign"));
            }
            let count = (i128::from(end) - i128::from(start)) / i128::from(step) + 1;
            let bytes = count.unsigned_abs() * 8;
            if bytes > MAX_VALUE_BYTES as u128 {
                return Err(value_too_large("GENERATE_SERIES", bytes));
            }
            let DataType::List(f) = ret else {
                return Err(err("GENERATE_SERIES returns a list"));
            };
            let mut items = Vec::new();
            let mut i = start;
            while (step > 0 && i <= end) || (step < 0 && i >= end) {
                items.push(
                    Datum::Int(i)
                        .to_scalar(f.data_type())
                        .map_err(|e| err(e.to_string()))?,
                );
                i = match i.checked_add(step) {
                    Some(n) => n,
                    None => break,
                };
            }
            Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                &items,
                f.data_type(),
            )))
        },
    )
}

fn entries() -> ScalarUDF {
    RowFn::strict(
        "ENTRIES",
        |a| match a {
            [DataType::Map(f, _), DataType::Boolean] => match f.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => {
                    Ok(list_of(DataType::Struct(Fields::from(vec![
                        Field::new("K", kv[0].data_type().clone(), true),
                        Field::new("V", kv[1].data_type().clone(), true),
                    ]))))
                }
                _ => Err(no_variant("ENTRIES", a)),
            },
            _ => Err(no_variant("ENTRIES", a)),
        },
        |a, ret| {
            let Datum::Map(mut entries) =
                Datum::from_scalar(&a[0]).map_err(|e| err(e.to_string()))?
            else {
                return ScalarValue::try_from(ret);
            };
            if matches!(a[1], ScalarValue::Boolean(Some(true))) {
                entries.sort_by(|x, y| x.0.cmp(&y.0));
            }
            Datum::List(
                entries
                    .into_iter()
                    .map(|(k, v)| Datum::Struct(vec![k, v]))
                    .collect(),
            )
            .to_scalar(ret)
            .map_err(|e| err(e.to_string()))
        },
    )
}

fn as_map() -> ScalarUDF {
    RowFn::strict(
        "AS_MAP",
        |a| match a {
            [DataType::List(k), DataType::List(v)] => Ok(crate::types::map_type(
                k.data_type().clone(),
                v.data_type().clone(),
            )),
            _ => Err(no_variant("AS_MAP", a)),
        },
        |a, ret| {
            let (Datum::List(keys), Datum::List(values)) = (
                Datum::from_scalar(&a[0]).map_err(|e| err(e.to_string()))?,
                Datum::from_scalar(&a[1]).map_err(|e| err(e.to_string()))?,
            ) else {
                return ScalarValue::try_from(ret);
            };
            let mut out: Vec<(Datum, Datum)> = Vec::new();
            for (k, v) in keys.into_iter().zip(values) {
                if k.is_null() {
                    continue;
                }
                if let Some(e) = out.iter_mut().find(|e| e.0 == k) {
                    e.1 = v;
                } else {
                    out.push((k, v));
                }
            }
            Datum::Map(out)
                .to_scalar(ret)
                .map_err(|e| err(e.to_string()))
        },
    )
}

// ---------------------------------------------------------------- date/time

/// Converts a Java `DateTimeFormatter` pattern to a chrono format string.
pub fn java_format(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // quoted literal; '' is a single quote
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '%' {
                    out.push_str("%%");
                } else {
                    out.push(chars[i]);
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        let spec = match (c, n) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('z', _) => "%Z",
            ('Z', _) => "%z",
            ('X' | 'x', 1) => "%#z",
            ('X' | 'x', 2) => "%z",
            ('X' | 'x', _) => "%:z",
            ('%', _) => "%%",
            _ => {
                for _ in 0..n {
                    out.push(c);
                }
                i += n;
                continue;
            }
        };
        out.push_str(spec);
        i += n;
    }
    out
}

pub(super) fn tz_of(v: Option<&ScalarValue>) -> Result<chrono_tz::Tz> {
    match v.and_then(text) {
        None => Ok(chrono_tz::UTC),
        Some("Z" | "GMT") => Ok(chrono_tz::UTC),
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| err(format!("Unknown time-zone ID: {name}"))),
    }
}

fn format_ms(ms: i64, pattern: &str, tz: chrono_tz::Tz) -> Result<String> {
    let utc: DateTime<Utc> = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| err(format!("timestamp {ms} is out of range")))?;
    let fmt = java_format(pattern);
    let mut out = String::new();
    use std::fmt::Write as _;
    write!(out, "{}", utc.with_timezone(&tz).format(&fmt))
        .map_err(|_| err(format!("invalid format: {pattern}")))?;
    Ok(out)
}

/// Parses a timestamp with a Java pattern (UTC unless the pattern has a
/// zone): ms since the epoch, or ksqlDB's message.
pub fn parse_timestamp_ms(s: &str, pattern: &str) -> std::result::Result<i64, String> {
    parse_ms(s, pattern, chrono_tz::UTC).map_err(|e| match e {
        DataFusionError::Execution(m) | DataFusionError::Plan(m) => m,
        other => other.to_string(),
    })
}

/// Parses `s` with a Java pattern into epoch milliseconds.
fn parse_ms(s: &str, pattern: &str, tz: chrono_tz::Tz) -> Result<i64> {
    // Java reads any number of fraction digits for S…S.
    let fmt = java_format(pattern)
        .replace(".%3f", "%.f")
        .replace(".%6f", "%.f")
        .replace(".%9f", "%.f");
    let fail = || {
        err(format!(
            "Failed to parse timestamp '{s}' with formatter '{pattern}'"
        ))
    };
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(&mut parsed, s, chrono::format::StrftimeItems::new(&fmt))
        .map_err(|_| fail())?;
    // Java's defaults for fields the pattern leaves out: 1970-01-01,
    // midnight.
    if parsed.year().is_none() && parsed.isoyear().is_none() {
        parsed.set_year(1970).map_err(|_| fail())?;
    }
    if parsed.month().is_none() && parsed.ordinal().is_none() && parsed.week_from_sun().is_none() {
        parsed.set_month(1).map_err(|_| fail())?;
    }
    if parsed.day().is_none() && parsed.ordinal().is_none() && parsed.week_from_sun().is_none() {
        parsed.set_day(1).map_err(|_| fail())?;
    }
    if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
        parsed.set_hour(0).map_err(|_| fail())?;
    }
    if parsed.minute().is_none() {
        parsed.set_minute(0).map_err(|_| fail())?;
    }
    let naive = parsed
        .to_naive_date()
        .and_then(|d| parsed.to_naive_time().map(|t| d.and_time(t)))
        .map_err(|_| fail())?;
    if let Some(offset) = parsed.offset() {
        return Ok(naive.and_utc().timestamp_millis() - i64::from(offset) * 1000);
    }
    // A zone name (`z` in the pattern) chooses the zone.
    let tz = if pattern.contains('z') {
        s.split(|c: char| !c.is_ascii_alphabetic())
            .find_map(zone_by_name)
            .unwrap_or(tz)
    } else {
        tz
    };
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp_millis())
        .ok_or_else(fail)
}

/// The zone a Java `z` name stands for, where Java reads it as a region
/// (`PST` is Los Angeles time, daylight saving included).
fn zone_by_name(name: &str) -> Option<chrono_tz::Tz> {
    use chrono_tz::Tz;
    Some(match name {
        "UTC" | "GMT" | "Z" | "UT" => Tz::UTC,
        "PST" | "PDT" | "PT" => Tz::America__Los_Angeles,
        "MST" | "MDT" | "MT" => Tz::America__Denver,
        "CST" | "CDT" | "CT" => Tz::America__Chicago,
        "EST" | "EDT" | "ET" => Tz::America__New_York,
        "BST" => Tz::Europe__London,
        "CET" | "CEST" => Tz::Europe__Paris,
        "EET" | "EEST" => Tz::Europe__Athens,
        "IST" => Tz::Asia__Kolkata,
        "JST" => Tz::Asia__Tokyo,
        other => other.parse().ok()?,
    })
}

fn ts_ms(v: &ScalarValue) -> Option<i64> {
    match Datum::from_scalar(v).ok()? {
        Datum::Int(i) => Some(i),
        _ => None,
    }
}

fn timestamp_to_string(name: &'static str) -> ScalarUDF {
    // TIMESTAMPTOSTRING(BIGINT ms, fmt[, tz]); FORMAT_TIMESTAMP(TIMESTAMP, fmt[, tz])
    RowFn::strict_batched(
        name,
        |a| {
            check(
                "FORMAT_TIMESTAMP",
                a,
                (2..=3).contains(&a.len())
                    && (is_int(&a[0]) || matches!(a[0], DataType::Timestamp(..)))
                    && a[1..].iter().all(is_str),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(ms), Some(fmt)) = (ts_ms(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            Ok(utf8(format_ms(ms, fmt, tz_of(a.get(2))?)?))
        },
        kernels::format_timestamp,
    )
}

fn string_to_timestamp() -> ScalarUDF {
    RowFn::strict(
        "STRINGTOTIMESTAMP",
        |a| {
            check(
                "STRINGTOTIMESTAMP",
                a,
                (2..=3).contains(&a.len()) && a.iter().all(is_str),
                DataType::Int64,
            )
        },
        |a, _| {
            let (Some(s), Some(fmt)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Int64(None));
            };
            Ok(ScalarValue::Int64(Some(parse_ms(
                s,
                fmt,
                tz_of(a.get(2))?,
            )?)))
        },
    )
}

fn parse_timestamp() -> ScalarUDF {
    RowFn::strict(
        "PARSE_TIMESTAMP",
        |a| {
            check(
                "PARSE_TIMESTAMP",
                a,
                (2..=3).contains(&a.len()) && a.iter().all(is_str),
                DataType::Timestamp(TimeUnit::Millisecond, None),
            )
        },
        |a, _| {
            let (Some(s), Some(fmt)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::TimestampMillisecond(None, None));
            };
            Ok(ScalarValue::TimestampMillisecond(
                Some(parse_ms(s, fmt, tz_of(a.get(2))?)?),
                None,
            ))
        },
    )
}

const DAY_MS: i64 = 86_400_000;

fn format_date(name: &'static str) -> ScalarUDF {
    // DATETOSTRING(INT days, fmt); FORMAT_DATE(DATE, fmt)
    RowFn::strict(
        name,
        |a| {
            check(
                "FORMAT_DATE",
                a,
                a.len() == 2 && (is_int(&a[0]) || a[0] == DataType::Date32) && is_str(&a[1]),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(days), Some(fmt)) = (ts_ms(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            Ok(utf8(format_ms(days * DAY_MS, fmt, chrono_tz::UTC)?))
        },
    )
}

fn parse_date(name: &'static str) -> ScalarUDF {
    // STRINGTODATE → INT days; PARSE_DATE → DATE
    let ret: super::udf::ReturnFn = if name == "PARSE_DATE" {
        |a| {
            check(
                "PARSE_DATE",
                a,
                a.len() == 2 && a.iter().all(is_str),
                DataType::Date32,
            )
        }
    } else {
        |a| {
            check(
                "STRINGTODATE",
                a,
                a.len() == 2 && a.iter().all(is_str),
                DataType::Int32,
            )
        }
    };
    RowFn::strict(name, ret, |a, ret| {
        let (Some(s), Some(fmt)) = (text(&a[0]), text(&a[1])) else {
            return ScalarValue::try_from(ret);
        };
        // Like Java's parse at a position, text after the date is ignored.
        let days = match parse_ms(s, fmt, chrono_tz::UTC) {
            Ok(ms) => ms.div_euclid(DAY_MS) as i32,
            Err(e) => NaiveDate::parse_and_remainder(s, &java_format(fmt))
                .map_err(|_| e)?
                .0
                .signed_duration_since(NaiveDate::default())
                .num_days() as i32,
        };
        Ok(if *ret == DataType::Date32 {
            ScalarValue::Date32(Some(days))
        } else {
            ScalarValue::Int32(Some(days))
        })
    })
}

fn format_time() -> ScalarUDF {
    RowFn::strict(
        "FORMAT_TIME",
        |a| {
            check(
                "FORMAT_TIME",
                a,
                a.len() == 2
                    && matches!(a[0], DataType::Time32(_) | DataType::Null)
                    && is_str(&a[1]),
                DataType::Utf8,
            )
        },
        |a, _| {
            let (Some(ms), Some(fmt)) = (ts_ms(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Utf8(None));
            };
            Ok(utf8(format_ms(ms, fmt, chrono_tz::UTC)?))
        },
    )
}

fn parse_time() -> ScalarUDF {
    RowFn::strict(
        "PARSE_TIME",
        |a| {
            check(
                "PARSE_TIME",
                a,
                a.len() == 2 && a.iter().all(is_str),
                DataType::Time32(TimeUnit::Millisecond),
            )
        },
        |a, _| {
            let (Some(s), Some(fmt)) = (text(&a[0]), text(&a[1])) else {
                return Ok(ScalarValue::Time32Millisecond(None));
            };
            let f = java_format(fmt);
            let t = NaiveTime::parse_from_str(s, &f)
                .map_err(|_| err(format!("Failed to parse time '{s}' with formatter '{fmt}'")))?;
            let ms = t.signed_duration_since(NaiveTime::MIN).num_milliseconds();
            Ok(ScalarValue::Time32Millisecond(Some(ms as i32)))
        },
    )
}

fn unix_timestamp() -> ScalarUDF {
    RowFn::volatile(
        "UNIX_TIMESTAMP",
        |a| {
            check(
                "UNIX_TIMESTAMP",
                a,
                a.is_empty()
                    || a.len() == 1 && matches!(a[0], DataType::Timestamp(..) | DataType::Null),
                DataType::Int64,
            )
        },
        |a, _| {
            Ok(ScalarValue::Int64(match a.first() {
                Some(v) => ts_ms(v),
                None => Some(Utc::now().timestamp_millis()),
            }))
        },
    )
}

fn unix_date() -> ScalarUDF {
    RowFn::volatile(
        "UNIX_DATE",
        |a| {
            check(
                "UNIX_DATE",
                a,
                a.is_empty() || a.len() == 1 && matches!(a[0], DataType::Date32 | DataType::Null),
                DataType::Int32,
            )
        },
        |a, _| {
            Ok(ScalarValue::Int32(match a.first() {
                Some(v) => ts_ms(v).map(|d| d as i32),
                None => Some(Utc::now().timestamp_millis().div_euclid(DAY_MS) as i32),
            }))
        },
    )
}

fn from_unixtime() -> ScalarUDF {
    RowFn::strict_batched(
        "FROM_UNIXTIME",
        |a| {
            check(
                "FROM_UNIXTIME",
                a,
                a.len() == 1 && is_int(&a[0]),
                DataType::Timestamp(TimeUnit::Millisecond, None),
            )
        },
        |a, _| Ok(ScalarValue::TimestampMillisecond(int(&a[0]), None)),
        kernels::from_unixtime,
    )
}

fn from_days() -> ScalarUDF {
    RowFn::strict(
        "FROM_DAYS",
        |a| {
            check(
                "FROM_DAYS",
                a,
                a.len() == 1 && is_int(&a[0]),
                DataType::Date32,
            )
        },
        |a, _| {
            Ok(ScalarValue::Date32(
                int(&a[0]).and_then(|d| i32::try_from(d).ok()),
            ))
        },
    )
}

/// Milliseconds in one `unit` (SECONDS, MINUTES, …, DAYS).
pub(crate) fn unit_ms(unit: &str) -> Result<i64> {
    Ok(match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => DAY_MS,
        other => return Err(err(format!("unknown time unit {other}"))),
    })
}

fn time_add(name: &'static str, sign: i64) -> ScalarUDF {
    let eval: super::udf::EvalFn = if sign > 0 {
        |a, ret| shift_time(a, ret, 1)
    } else {
        |a, ret| shift_time(a, ret, -1)
    };
    RowFn::strict(
        name,
        |a| match a {
            [u, n, t] if is_str(u) && is_int(n) => match t {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Time32(_) => Ok(t.clone()),
                DataType::Null => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
                _ => Err(no_variant("TIMESTAMPADD", a)),
            },
            _ => Err(no_variant("TIMESTAMPADD", a)),
        },
        eval,
    )
}

fn shift_time(a: &[ScalarValue], ret: &DataType, sign: i64) -> Result<ScalarValue> {
    let (Some(unit), Some(n), Some(t)) = (text(&a[0]), int(&a[1]), ts_ms(&a[2])) else {
        return ScalarValue::try_from(ret);
    };
    let delta = unit_ms(unit)?.saturating_mul(n).saturating_mul(sign);
    Ok(match ret {
        DataType::Date32 => ScalarValue::Date32(Some((t + delta.div_euclid(DAY_MS)) as i32)),
        DataType::Time32(_) => {
            ScalarValue::Time32Millisecond(Some((t + delta).rem_euclid(DAY_MS) as i32))
        }
        _ => ScalarValue::TimestampMillisecond(Some(t.saturating_add(delta)), None),
    })
}

/// Brook's scalar functions, by ksqlDB name.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        pad(true),
        pad(false),
        table_function("EXPLODE"),
        table_function("CUBE_EXPLODE"),
        as_value(),
        to_json_string(),
        extract_json_field(),
        is_json_string(),
        json_array_length(),
        json_keys(),
        json_items(),
        json_records(),
        json_concat(),
        split(),
        regexp_extract(),
        array_join(),
        like_escape(),
        empty_struct(),
        array_sort(),
        regexp_extract_all(),
        regexp_split_to_array(),
        regexp_replace(),
        replace(),
        instr(),
        substring(),
        mask("MASK"),
        mask("MASK_LEFT"),
        mask("MASK_RIGHT"),
        mask("MASK_KEEP_LEFT"),
        mask("MASK_KEEP_RIGHT"),
        to_bytes(),
        from_bytes(),
        number_from_bytes("INT_FROM_BYTES"),
        number_from_bytes("BIGINT_FROM_BYTES"),
        number_from_bytes("DOUBLE_FROM_BYTES"),
        ln_log(),
        round_trunc("ROUND"),
        round_trunc("TRUNC"),
        float_fn("SQRT"),
        float_fn("LN"),
        float_fn("EXP"),
        float_fn("CBRT"),
        sign(),
        generate_series(),
        entries(),
        as_map(),
        timestamp_to_string("TIMESTAMPTOSTRING"),
        timestamp_to_string("FORMAT_TIMESTAMP"),
        string_to_timestamp(),
        parse_timestamp(),
        format_date("DATETOSTRING"),
        format_date("FORMAT_DATE"),
        parse_date("STRINGTODATE"),
        parse_date("PARSE_DATE"),
        format_time(),
        parse_time(),
        unix_timestamp(),
        unix_date(),
        from_unixtime(),
        from_days(),
        time_add("TIMESTAMPADD", 1),
        time_add("TIMESTAMPSUB", -1),
        time_add("DATEADD", 1),
        time_add("DATESUB", -1),
        time_add("TIMEADD", 1),
        time_add("TIMESUB", -1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_ties_go_up_and_negative_places_round_to_tens() {
        assert_eq!(round_double(1.5, 0, false), 2.0);
        assert_eq!(round_double(-1.5, 0, false), -1.0);
        assert_eq!(round_double(-1.7, 0, false), -2.0);
        assert_eq!(round_double(12345.678, -1, false), 12350.0);
        assert_eq!(round_double(-12345.678, -2, false), -12300.0);
        assert_eq!(round_double(12345.678, 2, true), 12345.67);
        assert_eq!(round_double(1.234567, 10, false), 1.234567);
        assert!(round_double(f64::NAN, 1, false).is_nan());
        // 123.45 at scale 2 to one place: 123.5; truncated: 123.4.
        assert_eq!(round_unscaled(12345, 2, 1, false), Some(12350));
        assert_eq!(round_unscaled(-12345, 2, 1, false), Some(-12340));
        assert_eq!(round_unscaled(-12345, 2, 1, true), Some(-12340));
        assert_eq!(round_unscaled(5, 0, -40, false), Some(0));
    }

    #[test]
    fn bytes_split_like_strings() {
        assert_eq!(
            split_bytes(b"a.b..c", b"."),
            vec![&b"a"[..], b"b", b"", b"c"]
        );
        assert_eq!(split_bytes(b"ab", b""), vec![&b"a"[..], b"b"]);
        assert_eq!(split_bytes(b"", b""), vec![&b""[..]]);
        assert_eq!(split_bytes(b"x$$y", b"$$"), vec![&b"x"[..], b"y"]);
    }

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(
            java_format("yyyy-MM-dd'T'HH:mm:ss.SSSX"),
            "%Y-%m-%dT%H:%M:%S.%3f%#z"
        );
        assert_eq!(
            format_ms(1_526_075_913_000, "yyyy-MM-dd HH:mm:ss", chrono_tz::UTC).expect("formats"),
            "2018-05-11 21:58:33"
        );
        assert_eq!(
            parse_ms(
                "2018-05-11T21:58:33Z",
                "yyyy-MM-dd'T'HH:mm:ssX",
                chrono_tz::UTC
            )
            .expect("parses"),
            1_526_075_913_000
        );
    }

    #[test]
    fn masks_cover_the_chosen_characters() {
        let s = |v: &str| ScalarValue::Utf8(Some(v.into()));
        let n = |v: i32| ScalarValue::Int32(Some(v));
        let all = mask_with(&[s("Ab1-")], false, |_, _, _| true).expect("mask");
        assert_eq!(all, s("Xxn-"));
        let left = mask_with(&[s("Abc1"), n(2)], true, |i, _, n| i < n).expect("mask");
        assert_eq!(left, s("Xxc1"));
        let keep_upper = || ScalarValue::Utf8(None);
        let right = mask_with(&[s("Abc1"), n(2)], true, |i, len, n| i + n >= len).expect("mask");
        assert_eq!(right, s("Abxn"));
        let upper = mask_with(&[s("Ab"), keep_upper()], false, |_, _, _| true).expect("mask");
        assert_eq!(
            upper,
            s("Ax"),
            "a NULL replacement leaves that class unmasked"
        );
        let wrong = fixed_bytes::<4>(&[ScalarValue::Binary(Some(vec![1, 2]))]);
        assert!(wrong.is_err());
    }

    #[test]
    fn json_paths_follow_objects_and_arrays() {
        let j: Json = serde_json::from_str(r#"{"a": {"b": [1, {"c": "x"}]}}"#).expect("json");
        assert_eq!(json_path(&j, "$.a.b[1].c"), Some(&Json::from("x")));
        assert_eq!(json_path(&j, "$['a'].b[0]"), Some(&Json::from(1)));
        assert_eq!(json_path(&j, "$.nope"), None);
    }
}
