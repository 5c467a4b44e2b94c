//! The parser never panics: generated SQL (token soup, arbitrary text and
//! well-formed ksqlDB statements) parses or fails with an error. A bounded
//! number of cases runs on every test run; `PROPTEST_CASES` raises it.

use brook_planner::parser::parse;
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "PARTITION",
    "EMIT",
    "CHANGES",
    "CREATE",
    "STREAM",
    "TABLE",
    "AS",
    "WITH",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    ">>",
    ",",
    ";",
    "'a'",
    "\"q\"",
    "`b`",
    "1",
    "-2.5",
    "1e9",
    "x",
    "*",
    "+",
    "||",
    "->",
    ":=",
    "=>",
    "ARRAY",
    "MAP",
    "STRUCT",
    "DECIMAL",
    "KEY",
    "PRIMARY",
    "INSERT",
    "INTO",
    "VALUES",
    "CASE",
    "WHEN",
    "THEN",
    "END",
    "CAST",
    "NULL",
    "IS",
    "NOT",
    "BETWEEN",
    "AND",
    "LIKE",
    "IN",
    "SHOW",
    "DESCRIBE",
    "FUNCTION",
    "PRINT",
    "DROP",
    "TERMINATE",
    "SET",
    "$",
    "?",
    "\n",
    "--c\n",
    "/*",
    "*/",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..48).prop_map(|t| t.join(" "))
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("col".to_string()),
        Just("'s'".to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        Just("NULL".to_string()),
        Just("ARRAY[1, 2]".to_string()),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} = {b}")),
            inner.clone().prop_map(|a| format!("ABS({a})")),
            inner.clone().prop_map(|a| format!("CAST({a} AS STRING)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("STRUCT(F := {a}, G := {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("MAP({a} := {b})")),
            inner
                .clone()
                .prop_map(|a| format!("CASE WHEN {a} IS NULL THEN 1 ELSE 2 END")),
            inner.prop_map(|a| format!("s->{a}")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        expr().prop_map(|e| format!("SELECT {e} FROM t EMIT CHANGES;")),
        expr().prop_map(|e| format!("CREATE STREAM s AS SELECT {e} AS c FROM t WHERE {e};")),
        expr().prop_map(|e| format!("INSERT INTO t (a) VALUES ({e});")),
        Just("CREATE STREAM s (a ARRAY<MAP<STRING, STRUCT<X DECIMAL(4, 2)>>> KEY) WITH (kafka_topic='t');".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(sql in token_soup()) {
        let _ = parse(&sql);
    }

    #[test]
    fn arbitrary_text_never_panics(sql in ".{0,200}") {
        let _ = parse(&sql);
    }

    #[test]
    fn generated_statements_never_panic(sql in statement()) {
        let _ = parse(&sql);
    }
}

#[test]
fn ten_thousand_nested_parentheses_are_an_error() {
    for sql in [
        format!(
            "SELECT {}1{} FROM t;",
            "(".repeat(10_000),
            ")".repeat(10_000)
        ),
        format!(
            "CREATE STREAM s (a {}INT{});",
            "ARRAY<".repeat(10_000),
            ">".repeat(10_000)
        ),
        format!("SELECT {}1 FROM t;", "- ".repeat(10_000)),
        format!("SELECT {}TRUE FROM t;", "NOT ".repeat(10_000)),
    ] {
        assert!(parse(&sql).is_err(), "{}", &sql[..40]);
    }
}
