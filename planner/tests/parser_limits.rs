//! The parser's limits: expressions nest at most `MAX_EXPR_DEPTH` levels
//! ("statement too complex", never a stack overflow), however the depth is
//! built, and whitespace or comments cost linear time.

use brook_planner::parser::{parse, MAX_EXPR_DEPTH};
use brook_planner::PlanError;

fn chain(n: usize, op: &str) -> String {
    let mut s = String::from("1");
    for _ in 1..n {
        s.push_str(op);
        s.push('1');
    }
    s
}

fn too_complex(sql: &str) -> String {
    match parse(sql) {
        Err(PlanError::TooComplex(m)) => m,
        other => panic!("expected 'statement too complex', got {other:?}"),
    }
}

#[test]
fn a_chain_at_the_limit_parses_and_one_past_it_is_too_complex() {
    // n terms joined by n - 1 operators nest n levels deep.
    parse(&format!(
        "SELECT {} AS x FROM s;",
        chain(MAX_EXPR_DEPTH, " + ")
    ))
    .unwrap();
    let m = too_complex(&format!(
        "SELECT {} AS x FROM s;",
        chain(MAX_EXPR_DEPTH + 1, " + ")
    ));
    assert!(m.starts_with("statement too complex"), "{m}");
}

#[test]
fn a_hundred_thousand_terms_are_refused_without_building_the_tree() {
    let m = too_complex(&format!("SELECT {};", chain(100_000, "+")));
    assert!(m.contains("operators in one expression"), "{m}");
    // Across the statement kinds that hold expressions.
    too_complex(&format!(
        "CREATE STREAM t AS SELECT * FROM s WHERE {} > 0;",
        chain(50_000, " OR ")
    ));
    too_complex(&format!(
        "INSERT INTO s (a) VALUES ({});",
        chain(50_000, "*")
    ));
    too_complex(&format!(
        "SELECT * FROM s PARTITION BY {};",
        chain(50_000, "-")
    ));
}

#[test]
fn chains_between_the_token_bound_and_the_depth_limit_are_cut_and_freed() {
    // More than MAX_EXPR_DEPTH deep but under the token bound: sqlparser
    // builds the tree, the depth check cuts it off and frees it.
    let deep = chain(3 * MAX_EXPR_DEPTH, " + ");
    too_complex(&format!("SELECT {deep} FROM s;"));
    too_complex(&format!("SELECT * FROM s WHERE {deep} = 1 EMIT CHANGES;"));
    too_complex(&format!("SELECT ({deep}) AS x, 2 FROM s;"));
    // Postfix chains grow the same way.
    let casts = format!("SELECT x{} FROM s;", "::INT".repeat(3 * MAX_EXPR_DEPTH));
    too_complex(&casts);
    let nulls = format!("SELECT x{} FROM s;", " IS NULL".repeat(3 * MAX_EXPR_DEPTH));
    too_complex(&nulls);
}

#[test]
fn a_syntax_error_after_a_deep_chain_is_a_syntax_error() {
    // sqlparser drops what it built when it fails: the tree must be small
    // enough for that (the token bound).
    let e = parse(&format!(
        "SELECT {} FROM s WHERE;",
        chain(3 * MAX_EXPR_DEPTH, "+")
    ))
    .unwrap_err();
    assert!(matches!(e, PlanError::Syntax(_)), "{e:?}");
}

#[test]
fn long_flat_lists_are_not_deep() {
    // Subscripts and field accesses are a flat chain in sqlparser's tree.
    parse(&format!("SELECT a{} FROM s;", "[1]".repeat(5_000))).unwrap();
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    parse(&format!(
        "SELECT * FROM s WHERE x IN ({});",
        list.join(", ")
    ))
    .unwrap();
    let rows: Vec<String> = (0..5_000).map(|i| format!("({i}, -{i})")).collect();
    parse(&format!("INSERT INTO s (a, b) VALUES {};", rows.join(", "))).unwrap();
    let whens: String = (0..2_000)
        .map(|i| format!(" WHEN x = {i} THEN {i}"))
        .collect();
    parse(&format!("SELECT CASE{whens} END FROM s;")).unwrap();
}

#[test]
fn whitespace_and_comments_cost_linear_time() {
    // A megabyte of spaces, then of comments; quadratic rewriting would not
    // finish this test.
    let spaces = " ".repeat(1 << 20);
    let parsed = parse(&format!("SELECT 1{spaces};")).unwrap();
    assert_eq!(parsed[0].sql, "SELECT 1");
    let comments = "-- c\n".repeat(200_000);
    let parsed = parse(&format!("SELECT{comments} 1;{comments}SELECT 2;")).unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1].sql, "SELECT 2");
    // Many statements on one line: each one's text is found in one pass.
    let script = "SELECT 1;".repeat(20_000);
    assert_eq!(parse(&script).unwrap().len(), 20_000);
}
