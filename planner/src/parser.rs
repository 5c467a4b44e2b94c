//! The ksqlDB dialect: sqlparser's tokenizer and expression/query parser,
//! plus Brook's own parsing of the statements sqlparser does not know
//! (`CREATE STREAM`, `… EMIT CHANGES`, `SHOW STREAMS`, `TERMINATE`, …).
//!
//! Identifiers follow ksqlDB: unquoted names are upper-cased, quoted names
//! (`"x"` or `` `x` ``) keep their case. This is done once, on the tokens.
//!
//! One file per concern: `script` (variables, splitting a script into
//! statements, the entry points), `tokens` (rewrites and checks on the
//! tokens before sqlparser parses them), `window` (`WINDOW` and `WITHIN`
//! clauses), `statement` (the statements sqlparser does not know, and the
//! depth check of every statement), `tree` (what the parser produces) and
//! `depth` (how deep an expression may nest).

mod depth;
mod script;
mod statement;
mod tokens;
mod tree;
mod window;

pub use depth::MAX_EXPR_DEPTH;
pub use script::{parse, parse_statement, split_script, substitute_variables};
pub use statement::{literal_u64, object_name};
pub(crate) use tokens::is_condition;
pub use tokens::EMPTY_STRUCT;
pub use tree::{ColumnSpec, Emit, ExplainTarget, Parsed, PropValue, Props, ShowWhat, Statement};
pub use window::{WINDOW, WITHIN};

/// How deep parentheses and sub-expressions may nest before parsing stops
/// with an error (instead of overflowing the stack).
const RECURSION_LIMIT: usize = 64;

/// How many operators one chain (operands joined at one nesting level,
/// between commas and clauses) may hold. Checked on the tokens, before
/// sqlparser builds the chain as a tree as deep as it is long; the exact
/// depth limit ([`MAX_EXPR_DEPTH`]) is checked on the tree afterwards.
const MAX_CHAIN_OPERATORS: usize = 4 * MAX_EXPR_DEPTH;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SourceKind;

    fn one(sql: &str) -> Statement {
        parse_statement(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .statement
    }

    #[test]
    fn create_stream_with_props() {
        let s = one("create stream pageviews (user_id INT KEY, url STRING, `Ms` BIGINT) WITH (kafka_topic='pv', value_format='JSON', partitions=2);");
        let Statement::CreateSource {
            kind,
            name,
            columns,
            props,
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(kind, SourceKind::Stream);
        assert_eq!(name, "PAGEVIEWS");
        assert_eq!(
            columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["USER_ID", "URL", "Ms"]
        );
        assert!(columns[0].key && !columns[1].key);
        assert_eq!(
            props[0],
            ("KAFKA_TOPIC".into(), PropValue::String("pv".into()))
        );
        assert_eq!(
            props[2],
            ("PARTITIONS".into(), PropValue::Number("2".into()))
        );
    }

    #[test]
    fn create_table_as_select_and_push() {
        let s = one("CREATE TABLE t AS SELECT user_id, COUNT(*) AS n FROM pageviews GROUP BY user_id EMIT CHANGES");
        assert!(matches!(
            s,
            Statement::CreateAsSelect {
                kind: SourceKind::Table,
                ..
            }
        ));
        let s = one("SELECT * FROM t EMIT CHANGES LIMIT 3");
        let Statement::Select { query, emit, .. } = s else {
            panic!()
        };
        assert_eq!(emit, Some(Emit::Changes));
        assert_eq!(query.to_string(), "SELECT * FROM T LIMIT 3");
        let s = one("COPY (SELECT * FROM t EMIT CHANGES) TO STDOUT");
        assert!(matches!(
            s,
            Statement::CopyTo {
                emit: Some(Emit::Changes),
                ..
            }
        ));
    }

    #[test]
    fn print_statements() {
        assert!(matches!(
            one("PRINT 'my_topic' FROM BEGINNING INTERVAL 2 LIMIT 5"),
            Statement::Print {
                topic,
                from_beginning: true,
                interval: 2,
                limit: Some(5),
            } if topic == "my_topic"
        ));
        assert!(matches!(
            one("print pageviews"),
            Statement::Print {
                topic,
                from_beginning: false,
                interval: 1,
                limit: None,
            } if topic == "PAGEVIEWS"
        ));
        assert!(parse("PRINT 'x' FROM NOW").is_err());
        assert!(parse("PRINT 'x' LIMIT many").is_err());
    }

    #[test]
    fn partition_by_is_taken_out() {
        let s = one("CREATE STREAM o AS SELECT * FROM i PARTITION BY id, name EMIT CHANGES");
        let Statement::CreateAsSelect {
            query,
            partition_by: Some(p),
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT * FROM I");
        assert_eq!(
            p.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["ID", "NAME"]
        );
        let s = one("SELECT a FROM i PARTITION BY a LIMIT 3");
        let Statement::Select {
            query,
            partition_by: Some(_),
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT A FROM I LIMIT 3");
    }

    #[test]
    fn script_splits_and_keeps_text() {
        let all = parse("SHOW STREAMS;\n  INSERT INTO s (a) VALUES ('x;y');  FLUSH;").unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].sql, "INSERT INTO s (a) VALUES ('x;y')");
        assert!(matches!(all[2].statement, Statement::Flush));
    }

    #[test]
    fn scripts_split_outside_quotes_and_comments() {
        let pieces =
            split_script("DEFINE a = 'x;y'; -- c;\nSELECT \"b;\" FROM ${t}; /* ; */ FLUSH")
                .unwrap();
        assert_eq!(
            pieces,
            vec!["DEFINE a = 'x;y'", "SELECT \"b;\" FROM ${t}", "FLUSH"]
        );
    }

    #[test]
    fn variables_substitute_as_text() {
        let vars = |n: &str| (n == "T").then(|| "orders".to_string());
        assert_eq!(
            substitute_variables("SELECT * FROM ${t} WHERE s = '${T}'", &vars).unwrap(),
            "SELECT * FROM orders WHERE s = 'orders'"
        );
        assert!(substitute_variables("SELECT ${nope}", &vars).is_err());
        assert!(substitute_variables("SELECT ${t", &vars).is_err());
    }

    #[test]
    fn digits_then_letters_is_an_identifier() {
        let s = one("SELECT ROUND(v, -1) AS 1R FROM t");
        let Statement::Select { query, .. } = s else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT ROUND(V, -1) AS \"1R\" FROM T");
    }

    #[test]
    fn errors_carry_a_position() {
        let e = parse("SELECT * FROM t WHERE").unwrap_err().to_string();
        assert!(e.starts_with("syntax error"), "{e}");
        let e = parse("CREATE STREAM s (a INT) WITH (x=)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Line: 1, Column: 33"), "{e}");
        let e = parse("BOGUS stuff").unwrap_err().to_string();
        assert!(e.contains("Column: 1"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!(
            "SELECT {}1{} FROM t",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(parse(&sql).is_err());
    }
}
