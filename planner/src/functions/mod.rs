//! The built-in functions: one registry that planning, `SHOW FUNCTIONS` and
//! `DESCRIBE FUNCTION` share.
//!
//! Each ksqlDB function is either a DataFusion function with the same
//! semantics under ksqlDB's name, one of Brook's own ([`scalar`], row-wise
//! on ScalarValues), or an aggregate that Brook's incremental aggregation
//! computes (planned through a DataFusion aggregate of the same meaning,
//! so pull queries can run it too).

pub mod agg;
pub mod cast;
pub mod extremes;
mod kernels;
pub mod lambda;
pub mod scalar;
pub mod udf;

pub use udf::{take_row_errors, value_too_large, MAX_VALUE_BYTES};

use std::sync::Arc;

use datafusion::execution::context::SessionContext;

/// What kind of function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// One value per row.
    Scalar,
    /// One value per group.
    Aggregate,
    /// Zero or more rows per row.
    Table,
}

impl FunctionKind {
    /// `SCALAR` / `AGGREGATE`, as ksqlDB lists it.
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "SCALAR",
            FunctionKind::Aggregate => "AGGREGATE",
            FunctionKind::Table => "TABLE",
        }
    }
}

/// Where a function's implementation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// DataFusion's function of this name.
    DataFusion(&'static str),
    /// Brook's own, in [`scalar`].
    Brook,
    /// Takes lambdas: the planner rewrites the call to DataFusion's
    /// `array_transform`/`array_filter` or one of [`lambda`]'s.
    Lambda,
}

/// A function as `SHOW FUNCTIONS` and `DESCRIBE FUNCTION` show it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// ksqlDB's name, upper case.
    pub name: &'static str,
    /// Scalar or aggregate.
    pub kind: FunctionKind,
    /// ksqlDB's category (`MATHEMATICAL`, `STRING`, …).
    pub category: &'static str,
    /// Signatures, `NAME(arg TYPE, …) → TYPE`, one per variant.
    pub signatures: &'static [&'static str],
    /// What it does.
    pub description: &'static str,
    source: Source,
}

const fn f(
    name: &'static str,
    kind: FunctionKind,
    category: &'static str,
    source: Source,
    signatures: &'static [&'static str],
    description: &'static str,
) -> FunctionInfo {
    FunctionInfo {
        name,
        kind,
        category,
        signatures,
        description,
        source,
    }
}

use FunctionKind::{Aggregate as A, Scalar as S, Table as T};
use Source::{Brook as B, DataFusion as D};

const MATH: &str = "MATHEMATICAL";
const STR: &str = "STRING";
const DT: &str = "DATE / TIME";
const ARR: &str = "ARRAY";
const MAP: &str = "MAP";
const JSON: &str = "JSON";
const BYTES: &str = "BYTES";
const NULLS: &str = "CONDITIONAL";
const OTHER: &str = "OTHER";
const AGG: &str = "AGGREGATE";
const TABLE: &str = "TABLE";
const LAMBDA: &str = "LAMBDA";

/// Every built-in function.
pub static FUNCTIONS: &[FunctionInfo] = &[
    // numeric
    f("ABS", S, MATH, D("abs"), &["ABS(x DOUBLE|INT|BIGINT|DECIMAL) → same type"], "The absolute value of x."),
    f("ACOS", S, MATH, D("acos"), &["ACOS(x DOUBLE) → DOUBLE"], "The inverse cosine of x."),
    f("ASIN", S, MATH, D("asin"), &["ASIN(x DOUBLE) → DOUBLE"], "The inverse sine of x."),
    f("ATAN", S, MATH, D("atan"), &["ATAN(x DOUBLE) → DOUBLE"], "The inverse tangent of x."),
    f("ATAN2", S, MATH, D("atan2"), &["ATAN2(y DOUBLE, x DOUBLE) → DOUBLE"], "The inverse tangent of y / x, in the right quadrant."),
    f("CBRT", S, MATH, B, &["CBRT(x DOUBLE) → DOUBLE"], "The cube root of x."),
    f("CEIL", S, MATH, D("ceil"), &["CEIL(x DOUBLE) → DOUBLE"], "The smallest integer value not less than x."),
    f("COS", S, MATH, D("cos"), &["COS(x DOUBLE) → DOUBLE"], "The cosine of x (radians)."),
    f("COSH", S, MATH, D("cosh"), &["COSH(x DOUBLE) → DOUBLE"], "The hyperbolic cosine of x."),
    f("COT", S, MATH, D("cot"), &["COT(x DOUBLE) → DOUBLE"], "The cotangent of x (radians)."),
    f("DEGREES", S, MATH, D("degrees"), &["DEGREES(x DOUBLE) → DOUBLE"], "Radians to degrees."),
    f("EXP", S, MATH, B, &["EXP(x DOUBLE) → DOUBLE"], "e raised to the power x."),
    f("FLOOR", S, MATH, D("floor"), &["FLOOR(x DOUBLE) → DOUBLE"], "The largest integer value not greater than x."),
    f("GREATEST", S, MATH, D("greatest"), &["GREATEST(x T, y T, …) → T"], "The largest of the non-NULL arguments."),
    f("LEAST", S, MATH, D("least"), &["LEAST(x T, y T, …) → T"], "The smallest of the non-NULL arguments."),
    f("LN", S, MATH, B, &["LN(x DOUBLE) → DOUBLE"], "The natural logarithm of x (NaN for negatives, -Infinity for 0)."),
    f("LOG", S, MATH, B, &["LOG(x DOUBLE) → DOUBLE", "LOG(base DOUBLE, x DOUBLE) → DOUBLE"], "The logarithm of x, natural or in the given base."),
    f("PI", S, MATH, D("pi"), &["PI() → DOUBLE"], "The constant π."),
    f("POWER", S, MATH, D("power"), &["POWER(base DOUBLE, exponent DOUBLE) → DOUBLE"], "base raised to exponent."),
    f("RADIANS", S, MATH, D("radians"), &["RADIANS(x DOUBLE) → DOUBLE"], "Degrees to radians."),
    f("RANDOM", S, MATH, D("random"), &["RANDOM() → DOUBLE"], "A random number in [0, 1)."),
    f("ROUND", S, MATH, B, &["ROUND(x INT|BIGINT) → same type", "ROUND(x DOUBLE) → BIGINT", "ROUND(x DOUBLE, places INT) → DOUBLE", "ROUND(x DECIMAL(p, s)) → DECIMAL(p - s + 1, 0)", "ROUND(x DECIMAL(p, s), places INT) → DECIMAL(p, s)"], "x rounded to the given number of decimal places (negative: tens, hundreds…); ties round up."),
    f("SIGN", S, MATH, B, &["SIGN(x DOUBLE|INT|BIGINT|DECIMAL) → INT"], "-1, 0 or 1: the sign of x."),
    f("SIN", S, MATH, D("sin"), &["SIN(x DOUBLE) → DOUBLE"], "The sine of x (radians)."),
    f("SINH", S, MATH, D("sinh"), &["SINH(x DOUBLE) → DOUBLE"], "The hyperbolic sine of x."),
    f("SQRT", S, MATH, B, &["SQRT(x DOUBLE) → DOUBLE"], "The square root of x (NaN for negatives)."),
    f("TAN", S, MATH, D("tan"), &["TAN(x DOUBLE) → DOUBLE"], "The tangent of x (radians)."),
    f("TANH", S, MATH, D("tanh"), &["TANH(x DOUBLE) → DOUBLE"], "The hyperbolic tangent of x."),
    f("TRUNC", S, MATH, B, &["TRUNC(x INT|BIGINT) → same type", "TRUNC(x DOUBLE) → BIGINT", "TRUNC(x DOUBLE, places INT) → DOUBLE", "TRUNC(x DECIMAL(p, s)) → DECIMAL(p - s, 0)", "TRUNC(x DECIMAL(p, s), places INT) → DECIMAL(p, s)"], "x truncated toward zero to the given number of decimal places."),
    // strings
    f("CHR", S, STR, D("chr"), &["CHR(code INT) → STRING"], "The character with the given Unicode code point."),
    f("CONCAT", S, STR, D("concat"), &["CONCAT(s STRING, …) → STRING"], "The arguments joined; NULLs are skipped."),
    f("CONCAT_WS", S, STR, D("concat_ws"), &["CONCAT_WS(separator STRING, s STRING, …) → STRING"], "The arguments joined by separator; NULLs are skipped."),
    f("INITCAP", S, STR, D("initcap"), &["INITCAP(s STRING) → STRING"], "Each word capitalized."),
    f("INSTR", S, STR, B, &["INSTR(s STRING, sub STRING [, position INT [, occurrence INT]]) → INT"], "The 1-based position of the occurrence-th sub in s, searching from position (backwards if negative); 0 if absent."),
    f("LCASE", S, STR, D("lower"), &["LCASE(s STRING) → STRING"], "s in lower case."),
    f("LEN", S, STR, D("character_length"), &["LEN(s STRING) → INT"], "The number of characters in s."),
    f("LPAD", S, STR, B, &["LPAD(s STRING, length INT, padding STRING) → STRING"], "s left-padded (or truncated) to length."),
    f("MASK", S, STR, B, &["MASK(s STRING [, upper STRING, lower STRING, digit STRING, other STRING]) → STRING"], "s with letters, digits and other characters replaced (X, x, n, - by default)."),
    f("MASK_KEEP_LEFT", S, STR, B, &["MASK_KEEP_LEFT(s STRING, n INT [, …]) → STRING"], "Masks all but the first n characters."),
    f("MASK_KEEP_RIGHT", S, STR, B, &["MASK_KEEP_RIGHT(s STRING, n INT [, …]) → STRING"], "Masks all but the last n characters."),
    f("MASK_LEFT", S, STR, B, &["MASK_LEFT(s STRING, n INT [, …]) → STRING"], "Masks the first n characters."),
    f("MASK_RIGHT", S, STR, B, &["MASK_RIGHT(s STRING, n INT [, …]) → STRING"], "Masks the last n characters."),
    f("REGEXP_EXTRACT", S, STR, B, &["REGEXP_EXTRACT(pattern STRING, s STRING [, group INT]) → STRING"], "The first match of pattern in s (or its capture group)."),
    f("REGEXP_EXTRACT_ALL", S, STR, B, &["REGEXP_EXTRACT_ALL(pattern STRING, s STRING [, group INT]) → ARRAY<STRING>"], "Every match of pattern in s (or its capture group)."),
    f("REGEXP_REPLACE", S, STR, B, &["REGEXP_REPLACE(s STRING, pattern STRING, replacement STRING) → STRING"], "s with every match of pattern replaced ($n refers to groups)."),
    f("REGEXP_SPLIT_TO_ARRAY", S, STR, B, &["REGEXP_SPLIT_TO_ARRAY(s STRING, pattern STRING) → ARRAY<STRING>"], "s split around matches of pattern."),
    f("REPLACE", S, STR, B, &["REPLACE(s STRING, from STRING, to STRING) → STRING"], "s with every from replaced by to."),
    f("RPAD", S, STR, B, &["RPAD(s STRING, length INT, padding STRING) → STRING"], "s right-padded (or truncated) to length."),
    f("SPLIT", S, STR, B, &["SPLIT(s STRING, delimiter STRING) → ARRAY<STRING>", "SPLIT(b BYTES, delimiter BYTES) → ARRAY<BYTES>"], "s split at delimiter; an empty delimiter splits into characters."),
    f("SUBSTRING", S, STR, B, &["SUBSTRING(s STRING, position INT [, length INT]) → STRING", "SUBSTRING(b BYTES, position INT [, length INT]) → BYTES"], "Part of s from the 1-based position (negative counts from the end)."),
    f("TRIM", S, STR, D("btrim"), &["TRIM(s STRING) → STRING"], "s without leading and trailing whitespace."),
    f("UCASE", S, STR, D("upper"), &["UCASE(s STRING) → STRING"], "s in upper case."),
    f("UUID", S, STR, D("uuid"), &["UUID() → STRING"], "A random UUID."),
    // JSON
    f("EXTRACTJSONFIELD", S, JSON, B, &["EXTRACTJSONFIELD(json STRING, path STRING) → STRING"], "The value at a JSONPath ($.a.b[0]) of a JSON string."),
    f("IS_JSON_STRING", S, JSON, B, &["IS_JSON_STRING(s STRING) → BOOLEAN"], "Whether s is valid JSON."),
    f("JSON_ARRAY_LENGTH", S, JSON, B, &["JSON_ARRAY_LENGTH(json STRING) → INT"], "The length of a JSON array; NULL if not an array."),
    f("JSON_CONCAT", S, JSON, B, &["JSON_CONCAT(json STRING, …) → STRING"], "JSON objects merged, or arrays (and values) concatenated."),
    f("JSON_ITEMS", S, JSON, B, &["JSON_ITEMS(json STRING) → ARRAY<STRING>"], "The elements of a JSON array, as JSON strings."),
    f("JSON_KEYS", S, JSON, B, &["JSON_KEYS(json STRING) → ARRAY<STRING>"], "The keys of a JSON object."),
    f("JSON_RECORDS", S, JSON, B, &["JSON_RECORDS(json STRING) → MAP<STRING, STRING>"], "The fields of a JSON object, values as JSON strings."),
    f("TO_JSON_STRING", S, JSON, B, &["TO_JSON_STRING(x ANY) → STRING"], "x serialized as JSON."),
    // bytes
    f("BIGINT_FROM_BYTES", S, BYTES, B, &["BIGINT_FROM_BYTES(b BYTES [, byte_order STRING]) → BIGINT"], "8 bytes read as a BIGINT (BIG_ENDIAN by default)."),
    f("DOUBLE_FROM_BYTES", S, BYTES, B, &["DOUBLE_FROM_BYTES(b BYTES [, byte_order STRING]) → DOUBLE"], "8 bytes read as a DOUBLE."),
    f("FROM_BYTES", S, BYTES, B, &["FROM_BYTES(b BYTES, encoding STRING) → STRING"], "Bytes as hex, utf8, ascii or base64 text."),
    f("INT_FROM_BYTES", S, BYTES, B, &["INT_FROM_BYTES(b BYTES [, byte_order STRING]) → INT"], "4 bytes read as an INT."),
    f("TO_BYTES", S, BYTES, B, &["TO_BYTES(s STRING, encoding STRING) → BYTES"], "Text in hex, utf8, ascii or base64 as bytes."),
    // collections
    f("ARRAY_CONCAT", S, ARR, D("array_concat"), &["ARRAY_CONCAT(a ARRAY<T>, b ARRAY<T>) → ARRAY<T>"], "a followed by b."),
    f("ARRAY_CONTAINS", S, ARR, D("array_has"), &["ARRAY_CONTAINS(a ARRAY<T>, x T) → BOOLEAN"], "Whether a contains x."),
    f("ARRAY_DISTINCT", S, ARR, D("array_distinct"), &["ARRAY_DISTINCT(a ARRAY<T>) → ARRAY<T>"], "a without duplicates."),
    f("ARRAY_EXCEPT", S, ARR, D("array_except"), &["ARRAY_EXCEPT(a ARRAY<T>, b ARRAY<T>) → ARRAY<T>"], "The distinct elements of a not in b."),
    f("ARRAY_INTERSECT", S, ARR, D("array_intersect"), &["ARRAY_INTERSECT(a ARRAY<T>, b ARRAY<T>) → ARRAY<T>"], "The distinct elements in both."),
    f("ARRAY_JOIN", S, ARR, B, &["ARRAY_JOIN(a ARRAY<T> [, delimiter STRING]) → STRING"], "The elements as text (NULL as null), joined by delimiter (, by default)."),
    f("ARRAY_LENGTH", S, ARR, D("array_length"), &["ARRAY_LENGTH(a ARRAY<T>) → INT"], "The number of elements."),
    f("ARRAY_MAX", S, ARR, D("array_max"), &["ARRAY_MAX(a ARRAY<T>) → T"], "The largest non-NULL element."),
    f("ARRAY_MIN", S, ARR, D("array_min"), &["ARRAY_MIN(a ARRAY<T>) → T"], "The smallest non-NULL element."),
    f("ARRAY_REMOVE", S, ARR, D("array_remove_all"), &["ARRAY_REMOVE(a ARRAY<T>, x T) → ARRAY<T>"], "a without any element equal to x."),
    f("ARRAY_SORT", S, ARR, B, &["ARRAY_SORT(a ARRAY<T> [, direction STRING]) → ARRAY<T>"], "a sorted, ASC (the default) or DESC; NULLs last."),
    f("ARRAY_UNION", S, ARR, D("array_union"), &["ARRAY_UNION(a ARRAY<T>, b ARRAY<T>) → ARRAY<T>"], "The distinct elements of both."),
    f("GENERATE_SERIES", S, ARR, B, &["GENERATE_SERIES(start INT|BIGINT, end INT|BIGINT [, step INT|BIGINT]) → ARRAY<INT|BIGINT>"], "The numbers from start to end inclusive."),
    f("TRANSFORM", S, LAMBDA, Source::Lambda, &["TRANSFORM(a ARRAY<T>, x => U) → ARRAY<U>", "TRANSFORM(m MAP<K, V>, (k, v) => K2, (k, v) => V2) → MAP<K2, V2>"], "Each element of an array, or each key and value of a map, computed by the lambdas."),
    f("FILTER", S, LAMBDA, Source::Lambda, &["FILTER(a ARRAY<T>, x => BOOLEAN) → ARRAY<T>", "FILTER(m MAP<K, V>, (k, v) => BOOLEAN) → MAP<K, V>"], "The elements, or entries, for which the lambda is TRUE."),
    f("REDUCE", S, LAMBDA, Source::Lambda, &["REDUCE(a ARRAY<T>, s S, (s, x) => S) → S", "REDUCE(m MAP<K, V>, s S, (s, k, v) => S) → S"], "Folds the elements, or entries, in order into the state s; a NULL or empty collection gives s."),
    f("SLICE", S, ARR, D("array_slice"), &["SLICE(a ARRAY<T>, from INT, to INT) → ARRAY<T>"], "The elements from..to (1-based, inclusive)."),
    f("AS_MAP", S, MAP, B, &["AS_MAP(keys ARRAY<K>, values ARRAY<V>) → MAP<K, V>"], "A map from parallel arrays of keys and values."),
    f("ENTRIES", S, MAP, B, &["ENTRIES(m MAP<K, V>, sorted BOOLEAN) → ARRAY<STRUCT<K K, V V>>"], "The entries of a map as structs."),
    f("MAP_KEYS", S, MAP, D("map_keys"), &["MAP_KEYS(m MAP<K, V>) → ARRAY<K>"], "The keys of a map."),
    f("MAP_VALUES", S, MAP, D("map_values"), &["MAP_VALUES(m MAP<K, V>) → ARRAY<V>"], "The values of a map."),
    // nulls and generic
    f("AS_VALUE", S, OTHER, B, &["AS_VALUE(x T) → T"], "Copies a key column into the value."),
    f("COALESCE", S, NULLS, D("coalesce"), &["COALESCE(x T, …) → T"], "The first non-NULL argument."),
    f("IFNULL", S, NULLS, D("coalesce"), &["IFNULL(x T, alternative T) → T"], "x, or alternative if x is NULL."),
    f("NULLIF", S, NULLS, D("nullif"), &["NULLIF(x T, y T) → T"], "NULL if x = y, else x."),
    // date and time
    f("DATEADD", S, DT, B, &["DATEADD(unit, n INT, d DATE) → DATE"], "d plus n units."),
    f("DATESUB", S, DT, B, &["DATESUB(unit, n INT, d DATE) → DATE"], "d minus n units."),
    f("DATETOSTRING", S, DT, B, &["DATETOSTRING(days INT, format STRING) → STRING"], "Deprecated: days since the epoch formatted with a Java pattern."),
    f("FORMAT_DATE", S, DT, B, &["FORMAT_DATE(d DATE, format STRING) → STRING"], "A date formatted with a Java pattern."),
    f("FORMAT_TIME", S, DT, B, &["FORMAT_TIME(t TIME, format STRING) → STRING"], "A time formatted with a Java pattern."),
    f("FORMAT_TIMESTAMP", S, DT, B, &["FORMAT_TIMESTAMP(ts TIMESTAMP, format STRING [, zone STRING]) → STRING"], "A timestamp formatted with a Java pattern in a time zone (UTC)."),
    f("FROM_DAYS", S, DT, B, &["FROM_DAYS(days INT) → DATE"], "The date days after the epoch."),
    f("FROM_UNIXTIME", S, DT, B, &["FROM_UNIXTIME(ms BIGINT) → TIMESTAMP"], "The timestamp ms after the epoch."),
    f("PARSE_DATE", S, DT, B, &["PARSE_DATE(s STRING, format STRING) → DATE"], "Text parsed as a date with a Java pattern."),
    f("PARSE_TIME", S, DT, B, &["PARSE_TIME(s STRING, format STRING) → TIME"], "Text parsed as a time with a Java pattern."),
    f("PARSE_TIMESTAMP", S, DT, B, &["PARSE_TIMESTAMP(s STRING, format STRING [, zone STRING]) → TIMESTAMP"], "Text parsed as a timestamp with a Java pattern."),
    f("STRINGTODATE", S, DT, B, &["STRINGTODATE(s STRING, format STRING) → INT"], "Deprecated: text parsed as days since the epoch."),
    f("STRINGTOTIMESTAMP", S, DT, B, &["STRINGTOTIMESTAMP(s STRING, format STRING [, zone STRING]) → BIGINT"], "Deprecated: text parsed as ms since the epoch."),
    f("TIMEADD", S, DT, B, &["TIMEADD(unit, n INT, t TIME) → TIME"], "t plus n units, wrapping at midnight."),
    f("TIMESTAMPADD", S, DT, B, &["TIMESTAMPADD(unit, n INT, ts TIMESTAMP) → TIMESTAMP"], "ts plus n units."),
    f("TIMESTAMPSUB", S, DT, B, &["TIMESTAMPSUB(unit, n INT, ts TIMESTAMP) → TIMESTAMP"], "ts minus n units."),
    f("TIMESTAMPTOSTRING", S, DT, B, &["TIMESTAMPTOSTRING(ms BIGINT, format STRING [, zone STRING]) → STRING"], "Deprecated: ms since the epoch formatted with a Java pattern."),
    f("TIMESUB", S, DT, B, &["TIMESUB(unit, n INT, t TIME) → TIME"], "t minus n units, wrapping at midnight."),
    f("UNIX_DATE", S, DT, B, &["UNIX_DATE([d DATE]) → INT"], "Days since the epoch of d, or of today."),
    f("UNIX_TIMESTAMP", S, DT, B, &["UNIX_TIMESTAMP([ts TIMESTAMP]) → BIGINT"], "Milliseconds since the epoch of ts, or now."),
    // table functions
    f("CUBE_EXPLODE", T, TABLE, B, &["CUBE_EXPLODE(a ARRAY<T>) → ARRAY<T>"], "One row per combination of the elements of a and NULL: 2^n rows."),
    f("EXPLODE", T, TABLE, B, &["EXPLODE(a ARRAY<T>) → T"], "One row per element of a; several table functions in one SELECT are zipped, the shorter padded with NULL."),
    // aggregates (incremental, in Brook's pipeline)
    f("AVG", A, AGG, D("avg"), &["AVG(x INT|BIGINT|DOUBLE) → DOUBLE"], "The mean of the non-NULL values."),
    f("COLLECT_LIST", A, AGG, D("array_agg"), &["COLLECT_LIST(x T) → ARRAY<T>"], "Every non-NULL value, in arrival order."),
    f("COUNT", A, AGG, D("count"), &["COUNT(*) → BIGINT", "COUNT(x T) → BIGINT"], "The number of rows, or of non-NULL values."),
    f("EARLIEST_BY_OFFSET", A, AGG, B, &["EARLIEST_BY_OFFSET(x T [, ignoreNulls BOOLEAN]) → T", "EARLIEST_BY_OFFSET(x T, n INT [, ignoreNulls BOOLEAN]) → ARRAY<T>"], "The first value by offset, or the first n; NULLs are skipped unless ignoreNulls is false."),
    f("LATEST_BY_OFFSET", A, AGG, B, &["LATEST_BY_OFFSET(x T [, ignoreNulls BOOLEAN]) → T", "LATEST_BY_OFFSET(x T, n INT [, ignoreNulls BOOLEAN]) → ARRAY<T>"], "The last value by offset, or the last n (oldest first); NULLs are skipped unless ignoreNulls is false."),
    f("MAX", A, AGG, D("max"), &["MAX(x T) → T"], "The largest non-NULL value."),
    f("MIN", A, AGG, D("min"), &["MIN(x T) → T"], "The smallest non-NULL value."),
    f("TOPK", A, AGG, B, &["TOPK(x T, k INT) → ARRAY<T>"], "The k largest values, largest first."),
    f("TOPKDISTINCT", A, AGG, B, &["TOPKDISTINCT(x T, k INT) → ARRAY<T>"], "The k largest distinct values, largest first."),
    f("COLLECT_SET", A, AGG, B, &["COLLECT_SET(x T) → ARRAY<T>"], "The distinct non-NULL values (in ascending order)."),
    f("HISTOGRAM", A, AGG, B, &["HISTOGRAM(x STRING) → MAP<STRING, BIGINT>"], "How often each distinct non-NULL value occurs."),
    f("COUNT_DISTINCT", A, AGG, B, &["COUNT_DISTINCT(x T) → BIGINT"], "The number of distinct non-NULL values."),
    f("ATTR", A, AGG, B, &["ATTR(x T) → T"], "The value when every non-NULL value is the same, else NULL."),
    f("STDDEV_SAMP", A, AGG, B, &["STDDEV_SAMP(x INT|BIGINT|DOUBLE) → DOUBLE"], "The sample standard deviation of the non-NULL values."),
    f("CORRELATION", A, AGG, B, &["CORRELATION(x DOUBLE, y DOUBLE) → DOUBLE"], "The Pearson correlation coefficient of the pairs where neither value is NULL (NaN for fewer than two)."),
    f("SUM_LIST", A, AGG, B, &["SUM_LIST(xs ARRAY<INT|BIGINT|DOUBLE>) → the element type"], "The sum of the non-NULL elements of every array."),
    f("SUM", A, AGG, D("sum"), &["SUM(x INT|BIGINT|DOUBLE) → same type"], "The sum of the non-NULL values (0 when there are none)."),
];

/// A function by name, any case.
pub fn lookup(name: &str) -> Option<&'static FunctionInfo> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The lower-case names of [`FUNCTIONS`], in order (DataFusion resolves
/// function names in lower case; aliases must live forever).
fn lower_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        FUNCTIONS
            .iter()
            .map(|f| f.name.to_ascii_lowercase())
            .collect()
    })
}

/// ksqlDB's meanings of operators DataFusion reads otherwise: `+` between
/// two strings concatenates them.
#[derive(Debug)]
struct KsqlOperators;

impl datafusion::logical_expr::planner::ExprPlanner for KsqlOperators {
    fn plan_binary_op(
        &self,
        expr: datafusion::logical_expr::planner::RawBinaryExpr,
        schema: &datafusion::common::DFSchema,
    ) -> datafusion::common::Result<
        datafusion::logical_expr::planner::PlannerResult<
            datafusion::logical_expr::planner::RawBinaryExpr,
        >,
    > {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::planner::PlannerResult;
        use datafusion::logical_expr::{binary_expr, ExprSchemable, Operator};
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        let text =
            |t: DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        if expr.op == BinaryOperator::Plus
            && text(expr.left.get_type(schema)?)
            && text(expr.right.get_type(schema)?)
        {
            return Ok(PlannerResult::Planned(binary_expr(
                expr.left,
                Operator::StringConcat,
                expr.right,
            )));
        }
        Ok(PlannerResult::Original(expr))
    }
}

/// Registers every function under its ksqlDB name in a planning context.
pub fn register(ctx: &SessionContext) {
    let state = ctx.state();
    for (f, alias) in FUNCTIONS.iter().zip(lower_names()) {
        let Source::DataFusion(df) = f.source else {
            continue;
        };
        if alias == df {
            continue;
        }
        match f.kind {
            FunctionKind::Scalar | FunctionKind::Table => {
                if let Some(udf) = state.scalar_functions().get(df) {
                    ctx.register_udf(udf.as_ref().clone().with_aliases([alias.as_str()]));
                }
            }
            FunctionKind::Aggregate => {
                if let Some(udaf) = state.aggregate_functions().get(df) {
                    ctx.register_udaf(udaf.as_ref().clone().with_aliases([alias.as_str()]));
                }
            }
        }
    }
    for udf in scalar::all() {
        ctx.register_udf(udf);
    }
    for udaf in agg::all() {
        ctx.register_udaf(udaf);
    }
    ctx.register_udf(cast::udf());
    ctx.register_udf(cast::coerce_udf());
    for hof in lambda::all() {
        ctx.register_higher_order_function(hof);
    }
    {
        use datafusion::execution::FunctionRegistry;
        let _ = ctx
            .state_ref()
            .write()
            .register_expr_planner(Arc::new(KsqlOperators));
    }
    for name in ["greatest", "least"] {
        if let Some(df) = state.scalar_functions().get(name) {
            ctx.register_udf(extremes::wrap(Arc::clone(df)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::FunctionRegistry;

    #[test]
    fn every_listed_function_resolves_and_every_brook_function_is_listed() {
        let ctx = SessionContext::new();
        register(&ctx);
        for f in FUNCTIONS {
            let name = f.name.to_ascii_lowercase();
            let found = match f.kind {
                _ if f.source == Source::Lambda => ["array_transform", "array_filter"]
                    .into_iter()
                    .map(str::to_string)
                    .chain(lambda::all().iter().map(|h| h.name().to_string()))
                    .all(|n| ctx.state().higher_order_functions().contains_key(&n)),
                FunctionKind::Scalar | FunctionKind::Table => ctx.udf(&name).is_ok(),
                FunctionKind::Aggregate => ctx.udaf(&name).is_ok(),
            };
            assert!(found, "{} is listed but not registered", f.name);
            assert!(!f.signatures.is_empty() && !f.description.is_empty());
        }
        // `__brook_…` functions are the planner's own, not user functions.
        for udf in scalar::all().iter().filter(|u| !u.name().starts_with("__")) {
            let info = lookup(udf.name()).unwrap_or_else(|| panic!("{} is not listed", udf.name()));
            assert_eq!(info.source, Source::Brook, "{}", info.name);
        }
        for udaf in agg::all() {
            let info =
                lookup(udaf.name()).unwrap_or_else(|| panic!("{} is not listed", udaf.name()));
            assert_eq!(info.source, Source::Brook, "{}", info.name);
        }
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len(), "a function is listed twice");
    }
}
