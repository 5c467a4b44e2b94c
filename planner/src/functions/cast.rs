//! ksqlDB's casts of collections: `CAST(x AS ARRAY<…>|MAP<…>|STRUCT<…>)`
//! and collections cast to STRING.
//!
//! The parser turns such a cast into `__BROOK_CAST(x, 'type')` (sqlparser
//! and DataFusion do not read every ksqlDB collection type). ksqlDB casts a
//! collection element by element, narrows integers the way Java does
//! (`CAST(2147483648 AS INT)` is -2147483648), and writes a collection as
//! text the way Java's `toString` does (`[1, 3]`, `{k=1}`,
//! `Struct{A=1,b=2}`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

use crate::datum::Datum;
use crate::types::{parse_type_text, SqlType};

/// The planning name of a collection cast.
pub const NAME: &str = "__brook_cast";

/// Why a cast of `from` to `to` is refused (`None`: allowed). Collections
/// cast only to the same kind of collection (element types castable) or
/// to STRING; nothing else casts to a collection.
pub fn refusal(from: &SqlType, to: &SqlType) -> Option<String> {
    let allowed = match (from, to) {
        (SqlType::Array(a), SqlType::Array(b)) => refusal(a, b).is_none(),
        (SqlType::Map(ak, av), SqlType::Map(bk, bv)) => {
            refusal(ak, bk).is_none() && refusal(av, bv).is_none()
        }
        (SqlType::Struct(_), SqlType::Struct(_)) => true,
        (_, SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)) => false,
        _ => true,
    };
    (!allowed).then(|| {
        format!(
            "Cast of {} to {} is not supported",
            from.quoted(),
            to.quoted()
        )
    })
}

/// `__BROOK_CAST(x, 'type')`.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CollectionCast {
        signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CollectionCast {
    signature: Signature,
}

fn plan_err(m: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(m.into())
}

fn target_of(arg: Option<&ScalarValue>) -> Result<SqlType> {
    match arg {
        Some(ScalarValue::Utf8(Some(t))) => parse_type_text(t).map_err(|e| plan_err(e.to_string())),
        _ => Err(plan_err("the type of a cast must be a constant")),
    }
}

impl ScalarUDFImpl for CollectionCast {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(plan_err("__BROOK_CAST's type comes from its arguments"))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let target = target_of(args.scalar_arguments.get(1).copied().flatten())?;
        Ok(Arc::new(Field::new(NAME, target.arrow(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let to_arrow = args.return_field.data_type().clone();
        let to = SqlType::from_arrow(&to_arrow).map_err(|e| plan_err(e.to_string()))?;
        let from = SqlType::from_arrow(&args.arg_fields[0].data_type().clone())
            .map_err(|e| plan_err(e.to_string()))?;
        let cast = |v: &ScalarValue| -> Result<ScalarValue> {
            let d = Datum::from_scalar(v).map_err(|e| plan_err(e.to_string()))?;
            let out = cast_datum(d, &from, &to)?;
            out.to_scalar(&to_arrow)
                .map_err(|e| plan_err(e.to_string()))
        };
        match &args.args[0] {
            ColumnarValue::Scalar(v) => Ok(ColumnarValue::Scalar(cast(v)?)),
            ColumnarValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for i in 0..a.len() {
                    out.push(cast(&ScalarValue::try_from_array(a, i)?)?);
                }
                if out.is_empty() {
                    return Ok(ColumnarValue::Array(
                        datafusion::arrow::array::new_empty_array(&to_arrow),
                    ));
                }
                Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
            }
        }
    }
}

/// Casts a value of type `from` to `to`, as ksqlDB does.
pub fn cast_datum(d: Datum, from: &SqlType, to: &SqlType) -> Result<Datum> {
    if d.is_null() {
        return Ok(Datum::Null);
    }
    match (d, from, to) {
        (Datum::List(items), SqlType::Array(fe), SqlType::Array(te)) => Ok(Datum::List(
            items
                .into_iter()
                .map(|v| cast_datum(v, fe, te))
                .collect::<Result<_>>()?,
        )),
        (Datum::Map(entries), SqlType::Map(fk, fv), SqlType::Map(tk, tv)) => Ok(Datum::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((cast_datum(k, fk, tk)?, cast_datum(v, fv, tv)?)))
                .collect::<Result<_>>()?,
        )),
        (Datum::Struct(values), SqlType::Struct(ff), SqlType::Struct(tf)) => {
            // Fields match by name; a field the input lacks is NULL.
            let mut out = Vec::with_capacity(tf.len());
            for (name, ty) in tf {
                let found = ff
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(name))
                    .and_then(|i| Some((values.get(i)?.clone(), &ff[i].1)));
                out.push(match found {
                    Some((v, fty)) => cast_datum(v, fty, ty)?,
                    None => Datum::Null,
                });
            }
            Ok(Datum::Struct(out))
        }
        (d @ (Datum::List(_) | Datum::Map(_) | Datum::Struct(_)), from, SqlType::String) => {
            Ok(Datum::Str(java_text(&d, from)))
        }
        (Datum::Int(i), _, SqlType::Int) => Ok(Datum::Int(i64::from(i as i32))),
        (d, from, to) if from == to => Ok(d),
        (d, from, to) => {
            let v = d
                .to_scalar(&from.arrow())
                .map_err(|e| plan_err(e.to_string()))?;
            let cast = v.cast_to(&to.arrow())?;
            Datum::from_scalar(&cast).map_err(|e| plan_err(e.to_string()))
        }
    }
}

/// A value as Java's `toString` writes it.
pub(crate) fn java_text(d: &Datum, ty: &SqlType) -> String {
    match (d, ty) {
        (Datum::Null, _) => "null".into(),
        (Datum::List(items), SqlType::Array(e)) => {
            let parts: Vec<String> = items.iter().map(|v| java_text(v, e)).collect();
            format!("[{}]", parts.join(", "))
        }
        (Datum::Map(entries), SqlType::Map(k, v)) => {
            let parts: Vec<String> = entries
                .iter()
                .map(|(a, b)| format!("{}={}", java_text(a, k), java_text(b, v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        (Datum::Struct(values), SqlType::Struct(fields)) => {
            // Kafka Connect's Struct.toString: non-null fields only.
            let parts: Vec<String> = fields
                .iter()
                .zip(values)
                .filter(|(_, v)| !v.is_null())
                .map(|((n, t), v)| format!("{n}={}", java_text(v, t)))
                .collect();
            format!("Struct{{{}}}", parts.join(","))
        }
        (Datum::Float(x), _) => java_double(*x),
        (Datum::Str(s), _) => s.clone(),
        (Datum::Bool(b), _) => b.to_string(),
        (d, t) => d
            .to_scalar(&t.arrow())
            .map_or_else(|_| format!("{d:?}"), |v| v.to_string()),
    }
}

/// Java's `Double.toString` for the common range (a `.0` on whole numbers,
/// exponent notation outside 10^-3..10^7).
fn java_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        let s = format!("{x:E}");
        return match s.split_once('E') {
            Some((m, e)) if !m.contains('.') => format!("{m}.0E{e}"),
            _ => s,
        };
    }
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(t: &str) -> SqlType {
        parse_type_text(t).expect("type")
    }

    #[test]
    fn collections_cast_element_by_element_and_narrow_like_java() {
        let d = Datum::List(vec![Datum::Int(1), Datum::Int(2_147_483_648)]);
        let out = cast_datum(d, &ty("ARRAY<BIGINT>"), &ty("ARRAY<INT>")).expect("casts");
        assert_eq!(
            out,
            Datum::List(vec![Datum::Int(1), Datum::Int(-2_147_483_648)])
        );
    }

    #[test]
    fn collections_read_as_java_text() {
        let m = Datum::Map(vec![(Datum::Str("this".into()), Datum::Int(1))]);
        let out = cast_datum(m, &ty("MAP<STRING, INT>"), &SqlType::String).expect("casts");
        assert_eq!(out, Datum::Str("{this=1}".into()));
        let s = Datum::Struct(vec![Datum::Int(1), Datum::Float(3.0)]);
        let out = cast_datum(s, &ty("STRUCT<F0 INT, F1 DOUBLE>"), &SqlType::String).expect("casts");
        assert_eq!(out, Datum::Str("Struct{F0=1,F1=3.0}".into()));
    }

    #[test]
    fn only_collections_cast_to_collections() {
        assert_eq!(
            refusal(&SqlType::String, &ty("ARRAY<INT>")).as_deref(),
            Some("Cast of STRING to ARRAY<INTEGER> is not supported")
        );
        assert!(refusal(&ty("MAP<STRING, STRING>"), &ty("MAP<STRING, INT>")).is_none());
        assert!(refusal(&ty("ARRAY<INT>"), &SqlType::String).is_none());
    }
}

/// The planning name of a literal coerced to another expression's type.
pub const COERCE_NAME: &str = "__brook_coerce_literal";

/// `__brook_coerce_literal(literal, e)`: the literal as a value of `e`'s
/// type, as ksqlDB coerces the literals of a `MAP(…)` constructor to the
/// type of its other keys or values (`'true'` → TRUE, `10` → `'10'`).
/// A literal that does not read as that type is a planning error.
pub fn coerce_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CoerceLiteral {
        signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CoerceLiteral {
    signature: Signature,
}

/// A literal as a value of type `to`.
fn coerce_literal(v: &ScalarValue, to: &DataType) -> Result<ScalarValue> {
    if v.data_type() == *to || v.is_null() {
        return v.cast_to(to);
    }
    let target = SqlType::from_arrow(to).map_err(|e| plan_err(e.to_string()))?;
    let text = match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
        other => {
            let from =
                SqlType::from_arrow(&other.data_type()).map_err(|e| plan_err(e.to_string()))?;
            let d = Datum::from_scalar(other).map_err(|e| plan_err(e.to_string()))?;
            let out = cast_datum(d, &from, &target)?;
            return out.to_scalar(to).map_err(|e| plan_err(e.to_string()));
        }
    };
    let d = match target {
        // Java's Boolean.parseBoolean: anything but "true" is false.
        SqlType::Boolean => Datum::Bool(text.trim().eq_ignore_ascii_case("true")),
        _ => crate::datum::parse_text(&text, &target, "").map_err(|_| {
            plan_err(format!(
                "invalid input syntax for type {target}: \"{text}\"."
            ))
        })?,
    };
    d.to_scalar(to).map_err(|e| plan_err(e.to_string()))
}

impl ScalarUDFImpl for CoerceLiteral {
    fn name(&self) -> &str {
        COERCE_NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(plan_err(
            "__brook_coerce_literal's type comes from its arguments",
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let to = args.arg_fields[1].data_type().clone();
        match args.scalar_arguments.first().copied().flatten() {
            Some(v) => coerce_literal(v, &to)?,
            None => return Err(plan_err("only a literal can be coerced")),
        };
        Ok(Arc::new(Field::new(COERCE_NAME, to, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let to = args.return_field.data_type().clone();
        match &args.args[0] {
            ColumnarValue::Scalar(v) => Ok(ColumnarValue::Scalar(coerce_literal(v, &to)?)),
            ColumnarValue::Array(_) => Err(plan_err("only a literal can be coerced")),
        }
    }
}
