//! Parse → print → parse gives the same statement, for every statement
//! of the `.slt` suite that parses and for generated SQL. (The QTT
//! statements are checked by `qtt --round-trip` in the test script.)

use std::path::{Path, PathBuf};

use brook_planner::parser::parse;
use proptest::prelude::*;

/// Checks the round trip; false if `sql` does not parse at all.
fn assert_round_trips(sql: &str) -> bool {
    let Ok(parsed) = parse(sql) else {
        return false;
    };
    for p in parsed {
        let printed = p.statement.to_string();
        let again = parse(&printed).unwrap_or_else(|e| panic!("{sql}\nprinted as {printed}\n{e}"));
        assert_eq!(again.len(), 1, "{printed}");
        assert_eq!(
            again[0].statement, p.statement,
            "{sql}\nprinted as {printed}"
        );
    }
    true
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "slt") {
            out.push(path);
        }
    }
}

/// The SQL of each `statement …` / `query …` record of an `.slt` file.
fn slt_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("statement ") || line.starts_with("query ") {
            let sql: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty() && *l != "----")
                .collect();
            out.push(sql.join("\n"));
        }
    }
    out
}

#[test]
fn slt_statements_round_trip() {
    let mut files = Vec::new();
    slt_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-tests/slt"),
        &mut files,
    );
    assert!(!files.is_empty(), "no .slt files found");
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for sql in slt_statements(&text) {
            if assert_round_trips(&sql) {
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} statements found");
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("col".to_string()),
        Just("\"Mixed\"".to_string()),
        Just("'it''s'".to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        Just("1.50".to_string()),
        Just("NULL".to_string()),
        Just("ARRAY[1, 2]".to_string()),
        Just("ROWTIME".to_string()),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b} - 1)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} = {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} BETWEEN {b} AND 3)")),
            inner
                .clone()
                .prop_map(|a| format!("({a} LIKE 'a%' ESCAPE '!')")),
            inner.clone().prop_map(|a| format!("({a} IN (1, 2))")),
            inner
                .clone()
                .prop_map(|a| format!("({a} IS NOT DISTINCT FROM 1)")),
            inner.clone().prop_map(|a| format!("(NOT {a})")),
            inner.clone().prop_map(|a| format!("ABS({a})")),
            inner
                .clone()
                .prop_map(|a| format!("CAST({a} AS DECIMAL(4, 2))")),
            inner
                .clone()
                .prop_map(|a| format!("CAST({a} AS ARRAY<STRUCT<x INT>>)")),
            inner.clone().prop_map(|a| format!("{a}[1]")),
            inner
                .clone()
                .prop_map(|a| format!("TRANSFORM({a}, x => x + 1)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("STRUCT(F := {a}, g := {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("MAP({a} := {b})")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("CASE {a} WHEN 1 THEN {b} ELSE 2 END")),
            inner
                .clone()
                .prop_map(|a| format!("CASE WHEN {a} IS NULL THEN 1 ELSE 2 END")),
            inner.prop_map(|a| format!("(s->f->\"g\" + {a})")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        expr().prop_map(|e| format!("SELECT {e} FROM t EMIT CHANGES LIMIT 2")),
        expr().prop_map(|e| format!("SELECT {e}, COUNT(*) FROM t WHERE {e} GROUP BY {e}")),
        expr().prop_map(|e| format!(
            "CREATE STREAM s WITH (kafka_topic='x') AS SELECT {e} AS c FROM t WHERE {e} PARTITION BY {e}"
        )),
        expr().prop_map(|e| format!("INSERT INTO t (a, \"b\") VALUES ({e}, 1), (2, {e})")),
        expr().prop_map(|e| format!("INSERT INTO t SELECT {e} FROM u")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn generated_statements_round_trip(sql in statement()) {
        // Every generated statement is valid ksqlDB.
        prop_assert!(assert_round_trips(&sql), "does not parse: {}", sql);
    }
}
