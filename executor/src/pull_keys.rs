//! Key lookups for pull queries: when a pull query's filter pins every key
//! column of a materialized table to literals (`k = 1`, `k IN (1, 2)`,
//! `a = 'x' AND b = 2`), the rows are read by key from the state store
//! instead of scanning the table; when it bounds a single key column
//! (`k > 1`, `k BETWEEN 'a' AND 'f'`), only the range of keys is read, for
//! the key types and formats whose encoded keys sort as their values do.
//! The filter still runs over what the lookup returns, so a lookup only has
//! to return a superset of the rows that match: anything it is unsure of
//! falls back to the scan.

use brook_planner::catalog::{Column, SourceDef};
use brook_planner::types::SqlType;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use brook_planner::catalog::Format;

use crate::format::encode;
use crate::pull_scan::{EncodedRange, Lookup};
use crate::Datum;

/// Which of materialized table `def`'s rows a pull query must read.
pub(crate) fn lookup(plan: &LogicalPlan, def: &SourceDef) -> Lookup {
    if let Some(keys) = key_lookups(plan, def) {
        return Lookup::Keys(keys);
    }
    match key_ranges(plan, def) {
        Some(ranges) => Lookup::Ranges(ranges),
        None => Lookup::All,
    }
}

/// At most this many key combinations (`IN` lists multiply): past it, scan.
const MAX_LOOKUPS: usize = 1024;

/// The encoded keys (as the table's sink writes them, without any window
/// suffix) whose rows are all a pull query can return from `def`, or
/// `None` when it must scan.
pub(crate) fn key_lookups(plan: &LogicalPlan, def: &SourceDef) -> Option<Vec<Vec<u8>>> {
    let keys: Vec<&Column> = def.key_columns().collect();
    if keys.is_empty() {
        return None;
    }
    let pinned = only_filter(plan, def)?.and_then(|p| pin_keys(&p, &keys));
    let mut combos: Vec<Vec<&Datum>> = vec![vec![]];
    for values in pinned.as_ref()? {
        if combos.len() * values.len() > MAX_LOOKUPS {
            return None;
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v);
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|datums| encode(def.key_format, &keys, &datums, false).ok()?)
        .collect()
}

/// The filter right above the one scan of `def` in `plan`, if there is
/// one (`Some(None)`: a scan without one); `None` when `def` is scanned
/// more than once.
fn only_filter(plan: &LogicalPlan, def: &SourceDef) -> Option<Option<Expr>> {
    let mut scans = 0;
    let mut filter = None;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.table() == def.name => scans += 1,
            LogicalPlan::Filter(f) if scans_table(&f.input, &def.name) => {
                filter = Some(f.predicate.clone());
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    (scans == 1).then_some(filter)
}

/// The ranges `[start, end)` of encoded keys (`None`: unbounded) outside
/// which no row of `def` matches `plan`'s filter on its key, when `def` is
/// not windowed and has one key column of a type whose KAFKA encoding
/// sorts as its values do (strings: bytewise, as Arrow compares them;
/// integers: big-endian two's complement, which sorts negatives after the
/// rest, so a range across zero is two).
fn key_ranges(plan: &LogicalPlan, def: &SourceDef) -> Option<Vec<EncodedRange>> {
    let [key] = def.key_columns().collect::<Vec<_>>()[..] else {
        return None;
    };
    if def.window.is_some() || def.key_format != Format::Kafka {
        return None;
    }
    let mut conjuncts = vec![];
    let filter = only_filter(plan, def)??;
    conjuncts_of(&filter, &mut conjuncts);
    let mut lower: Option<(Datum, bool)> = None; // (bound, inclusive)
    let mut upper: Option<(Datum, bool)> = None;
    for c in conjuncts {
        for (bound, is_lower, inclusive) in bounds(c, key) {
            let slot = if is_lower { &mut lower } else { &mut upper };
            let tighter = match slot.as_ref() {
                None => true,
                Some((old, old_inclusive)) => match bound.partial_cmp(old) {
                    Some(std::cmp::Ordering::Equal) => *old_inclusive && !inclusive,
                    Some(std::cmp::Ordering::Greater) => is_lower,
                    Some(std::cmp::Ordering::Less) => !is_lower,
                    None => false,
                },
            };
            if tighter {
                *slot = Some((bound, inclusive));
            }
        }
    }
    if lower.is_none() && upper.is_none() {
        return None;
    }
    match key.ty {
        SqlType::Int => int_ranges(lower, upper, i32::MIN.into(), i32::MAX.into(), |i| {
            (i as i32).to_be_bytes().to_vec()
        }),
        SqlType::Bigint => int_ranges(lower, upper, i64::MIN.into(), i64::MAX.into(), |i| {
            (i as i64).to_be_bytes().to_vec()
        }),
        SqlType::String => {
            let text = |d: &Datum| match d {
                Datum::Str(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            };
            // The first string past `s` is `s` followed by a 0 byte.
            let past = |mut s: Vec<u8>| {
                s.push(0);
                s
            };
            let start = match &lower {
                Some((d, true)) => Some(text(d)?),
                Some((d, false)) => Some(past(text(d)?)),
                None => None,
            };
            let end = match &upper {
                Some((d, true)) => Some(past(text(d)?)),
                Some((d, false)) => Some(text(d)?),
                None => None,
            };
            if let (Some(s), Some(e)) = (&start, &end) {
                if s >= e {
                    return Some(vec![]);
                }
            }
            Some(vec![(start, end)])
        }
        _ => None,
    }
}

/// The byte ranges of integer keys between the bounds, within `[min, max]`.
fn int_ranges(
    lower: Option<(Datum, bool)>,
    upper: Option<(Datum, bool)>,
    min: i128,
    max: i128,
    bytes: impl Fn(i128) -> Vec<u8>,
) -> Option<Vec<EncodedRange>> {
    let int = |d: &Datum| match d {
        Datum::Int(i) => Some(i128::from(*i)),
        _ => None,
    };
    let lo = match &lower {
        Some((d, inclusive)) => int(d)? + i128::from(!inclusive),
        None => min,
    }
    .max(min);
    let hi = match &upper {
        Some((d, inclusive)) => int(d)? - i128::from(!inclusive),
        None => max,
    }
    .min(max);
    // Negative keys sort after the others: [lo, -1] and [0, hi] apart.
    let mut ranges = vec![];
    for (a, b) in [(lo, hi.min(-1)), (lo.max(0), hi)] {
        if a <= b {
            let mut end = bytes(b);
            end.push(0);
            ranges.push((Some(bytes(a)), Some(end)));
        }
    }
    Some(ranges)
}

/// The bounds a conjunct puts on column `key`: (literal, is it a lower
/// bound, inclusive).
fn bounds(expr: &Expr, key: &Column) -> Vec<(Datum, bool, bool)> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = if is_key(left, key) {
                (left, right, *op)
            } else if let Some(flipped) = op.swap() {
                (right, left, flipped)
            } else {
                return vec![];
            };
            if !is_key(col, key) {
                return vec![];
            }
            let Some(value) = literal(lit, &key.ty) else {
                return vec![];
            };
            match op {
                Operator::Gt => vec![(value, true, false)],
                Operator::GtEq => vec![(value, true, true)],
                Operator::Lt => vec![(value, false, false)],
                Operator::LtEq => vec![(value, false, true)],
                _ => vec![],
            }
        }
        Expr::Between(between) if !between.negated && is_key(&between.expr, key) => {
            match (
                literal(&between.low, &key.ty),
                literal(&between.high, &key.ty),
            ) {
                (Some(low), Some(high)) => vec![(low, true, true), (high, false, true)],
                _ => vec![],
            }
        }
        _ => vec![],
    }
}

/// Whether `plan` is a scan of `table`, under aliases at most.
fn scans_table(plan: &LogicalPlan, table: &str) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.table_name.table() == table,
        LogicalPlan::SubqueryAlias(alias) => scans_table(&alias.input, table),
        _ => false,
    }
}

/// For each key column, the literals the predicate's conjuncts pin it to.
fn pin_keys(predicate: &Expr, keys: &[&Column]) -> Option<Vec<Vec<Datum>>> {
    let mut conjuncts = vec![];
    conjuncts_of(predicate, &mut conjuncts);
    keys.iter()
        .map(|key| {
            conjuncts
                .iter()
                .find_map(|c| pinned_values(c, key))
                .filter(|v| !v.is_empty())
        })
        .collect()
}

/// The conjuncts of a filter: `a AND b` and `(…) IS TRUE` (as ksqlDB's
/// WHERE is planned) hold exactly when each of their parts does.
fn conjuncts_of<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::IsTrue(inner) => conjuncts_of(inner, out),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            conjuncts_of(left, out);
            conjuncts_of(right, out);
        }
        other => out.push(other),
    }
}

/// The literals `expr` pins column `key` to: `key = lit`, `lit = key`,
/// `key IN (lits)`.
fn pinned_values(expr: &Expr, key: &Column) -> Option<Vec<Datum>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (col, lit) = if is_key(left, key) {
                (left, right)
            } else {
                (right, left)
            };
            if !is_key(col, key) {
                return None;
            }
            Some(vec![literal(lit, &key.ty)?])
        }
        Expr::InList(list) if !list.negated && is_key(&list.expr, key) => list
            .list
            .iter()
            .map(|e| literal(e, &key.ty))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    }
}

/// Whether `expr` is the key column, or an integer key widened by a cast
/// (which keeps equality).
fn is_key(expr: &Expr, key: &Column) -> bool {
    match expr {
        Expr::Column(c) => c.name == key.name,
        Expr::Cast(cast) if cast.field.data_type().is_integer() => {
            matches!(key.ty, SqlType::Int | SqlType::Bigint) && is_key(&cast.expr, key)
        }
        _ => false,
    }
}

/// A literal as the key column's value, when it is exactly one: integers
/// for integer keys, strings for string keys, booleans for boolean keys.
fn literal(expr: &Expr, ty: &SqlType) -> Option<Datum> {
    let value = match expr {
        Expr::Literal(v, _) => v,
        Expr::Cast(cast) => return literal(&cast.expr, ty),
        _ => return None,
    };
    let datum = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Datum::Str(s.clone()),
        v if v.is_null() => return None,
        v => Datum::from_scalar(v).ok()?,
    };
    let fits = match (&datum, ty) {
        (Datum::Int(i), SqlType::Int) => i32::try_from(*i).is_ok(),
        (Datum::Int(_), SqlType::Bigint)
        | (Datum::Str(_), SqlType::String)
        | (Datum::Bool(_), SqlType::Boolean) => true,
        _ => false,
    };
    fits.then_some(datum)
}

#[cfg(test)]
mod tests {
    use brook_planner::binder::{plan_create_source, plan_pull, FormatDefaults};
    use brook_planner::catalog::Catalog;
    use brook_planner::parser::{parse_statement, Statement};

    use super::*;

    fn catalog(ddl: &str) -> Catalog {
        let Statement::CreateSource {
            kind,
            name,
            columns,
            props,
            ..
        } = parse_statement(ddl).unwrap().statement
        else {
            panic!("not a CREATE")
        };
        let mut catalog = Catalog::default();
        let columns = catalog.resolve_columns(&columns).unwrap();
        let def =
            plan_create_source(kind, &name, &columns, &props, FormatDefaults::default()).unwrap();
        catalog.sources.insert(name, def);
        catalog
    }

    fn lookups(catalog: &Catalog, sql: &str) -> Option<Vec<Vec<u8>>> {
        let Statement::Select { query, .. } = parse_statement(sql).unwrap().statement else {
            panic!("not a SELECT")
        };
        let plan = plan_pull(catalog, &query).unwrap();
        key_lookups(&plan.plan, &plan.sources[0])
    }

    #[test]
    fn equality_and_in_lists_on_the_key_are_lookups() {
        let c = catalog("CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1)");
        let int = |i: i32| i.to_be_bytes().to_vec();
        assert_eq!(
            lookups(&c, "SELECT * FROM T WHERE ID = 2"),
            Some(vec![int(2)])
        );
        assert_eq!(
            lookups(&c, "SELECT NAME FROM T WHERE 2 = ID AND NAME = 'x'"),
            Some(vec![int(2)])
        );
        assert_eq!(
            lookups(&c, "SELECT * FROM T WHERE ID IN (1, 3)"),
            Some(vec![int(1), int(3)])
        );
        assert_eq!(
            lookups(&c, "SELECT * FROM T t1 WHERE t1.ID = 5"),
            Some(vec![int(5)])
        );
    }

    #[test]
    fn anything_else_scans() {
        let c = catalog("CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1)");
        for sql in [
            "SELECT * FROM T",
            "SELECT * FROM T WHERE ID = 2 OR NAME = 'x'",
            "SELECT * FROM T WHERE NAME = 'x'",
            "SELECT * FROM T WHERE ID NOT IN (1, 2)",
            "SELECT * FROM T WHERE ID = 5000000000",
            "SELECT * FROM T WHERE ID = 1.5",
            "SELECT * FROM T WHERE ID + 1 = 3",
        ] {
            assert_eq!(lookups(&c, sql), None, "{sql}");
        }
    }

    fn ranges(catalog: &Catalog, sql: &str) -> Option<Vec<EncodedRange>> {
        let Statement::Select { query, .. } = parse_statement(sql).unwrap().statement else {
            panic!("not a SELECT")
        };
        let plan = plan_pull(catalog, &query).unwrap();
        key_ranges(&plan.plan, &plan.sources[0])
    }

    #[test]
    fn bounds_on_an_integer_key_are_ranges_split_at_zero() {
        let c = catalog("CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1)");
        let int = |i: i32| Some(i.to_be_bytes().to_vec());
        let past = |i: i32| Some([i.to_be_bytes().as_slice(), &[0]].concat());
        assert_eq!(
            ranges(&c, "SELECT * FROM T WHERE ID > 2 AND ID <= 9"),
            Some(vec![(int(3), past(9))])
        );
        assert_eq!(
            ranges(&c, "SELECT * FROM T WHERE ID BETWEEN -3 AND 4"),
            Some(vec![(int(-3), past(-1)), (int(0), past(4))])
        );
        assert_eq!(
            ranges(&c, "SELECT * FROM T WHERE 5 > ID AND ID > 1 AND ID < 9"),
            Some(vec![(int(2), past(4))])
        );
        assert_eq!(
            ranges(&c, "SELECT * FROM T WHERE ID >= 0"),
            Some(vec![(int(0), past(i32::MAX))])
        );
        assert_eq!(
            ranges(&c, "SELECT * FROM T WHERE ID > 3 AND ID < 2"),
            Some(vec![])
        );
    }

    #[test]
    fn bounds_on_a_string_key_are_one_bytewise_range() {
        let c = catalog("CREATE TABLE U (NAME STRING PRIMARY KEY, V INT) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON', PARTITIONS=1)");
        assert_eq!(
            ranges(&c, "SELECT * FROM U WHERE NAME > 'a' AND NAME <= 'c'"),
            Some(vec![(Some(b"a\0".to_vec()), Some(b"c\0".to_vec()))])
        );
        assert_eq!(
            ranges(&c, "SELECT * FROM U WHERE NAME < 'm'"),
            Some(vec![(None, Some(b"m".to_vec()))])
        );
    }

    #[test]
    fn other_filters_have_no_range() {
        let c = catalog("CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1)");
        for sql in [
            "SELECT * FROM T",
            "SELECT * FROM T WHERE NAME > 'x'",
            "SELECT * FROM T WHERE ID > 2 OR NAME = 'x'",
            "SELECT * FROM T WHERE ID + 1 > 3",
            "SELECT * FROM T WHERE ID > 1.5",
            "SELECT * FROM T WHERE ID NOT BETWEEN 1 AND 2",
        ] {
            assert_eq!(ranges(&c, sql), None, "{sql}");
        }
        // A JSON key's bytes do not sort as its values.
        let j = catalog("CREATE TABLE J (ID INT PRIMARY KEY, V INT) WITH (KAFKA_TOPIC='j', KEY_FORMAT='JSON', VALUE_FORMAT='JSON', PARTITIONS=1)");
        assert_eq!(ranges(&j, "SELECT * FROM J WHERE ID > 2"), None);
    }

    #[test]
    fn string_keys_are_encoded_as_the_sink_writes_them() {
        let c = catalog("CREATE TABLE U (NAME STRING PRIMARY KEY, V INT) WITH (KAFKA_TOPIC='u', KEY_FORMAT='JSON', VALUE_FORMAT='JSON', PARTITIONS=1)");
        assert_eq!(
            lookups(&c, "SELECT * FROM U WHERE NAME = 'a'"),
            Some(vec![b"\"a\"".to_vec()])
        );
    }
}
