//! Key lookups for pull queries: when a pull query's filter pins every key
//! column of a materialized table to literals (`k = 1`, `k IN (1, 2)`,
//! `a = 'x' AND b = 2`), the rows are read by key from the state store
//! instead of scanning the table. The filter still runs over what the
//! lookup returns, so a lookup only has to return a superset of the rows
//! that match: anything it is unsure of falls back to the scan.

use brook_planner::catalog::{Column, SourceDef};
use brook_planner::types::SqlType;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use crate::format::encode;
use crate::Datum;

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
    // Exactly one scan of the table, directly under a filter.
    let mut scans = 0;
    let mut pinned: Option<Vec<Vec<Datum>>> = None;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.table() == def.name => scans += 1,
            LogicalPlan::Filter(filter) if scans_table(&filter.input, &def.name) => {
                pinned = pin_keys(&filter.predicate, &keys);
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    if scans != 1 {
        return None;
    }
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
            "SELECT * FROM T WHERE ID > 2",
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

    #[test]
    fn string_keys_are_encoded_as_the_sink_writes_them() {
        let c = catalog("CREATE TABLE U (NAME STRING PRIMARY KEY, V INT) WITH (KAFKA_TOPIC='u', KEY_FORMAT='JSON', VALUE_FORMAT='JSON', PARTITIONS=1)");
        assert_eq!(
            lookups(&c, "SELECT * FROM U WHERE NAME = 'a'"),
            Some(vec![b"\"a\"".to_vec()])
        );
    }
}
