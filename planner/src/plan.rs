//! `StreamPlan`: the contract between planner and executor.
//!
//! A stream plan is a linear pipeline over one source: filters, projections
//! and at most one grouped aggregation, each carrying analyzed DataFusion
//! logical expressions and the schema they are evaluated against. A join
//! ([`JoinSpec`]) produces that source's rows from two inputs. (Windows
//! extend it in later work.) It is rebuilt from the statement text at
//! start, so it is not serialized.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan};
use std::fmt;

use crate::catalog::SourceDef;
pub use crate::functions::agg::ByOffsetArgs;

/// An aggregate function Brook maintains incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `COUNT(x)` (non-null x) or `COUNT(*)`.
    Count,
    /// `SUM(x)`
    Sum,
    /// `AVG(x)`
    Avg,
    /// `MIN(x)`
    Min,
    /// `MAX(x)`
    Max,
    /// `LATEST_BY_OFFSET(x [, n] [, ignoreNulls])`: the last (n) values.
    Latest(ByOffsetArgs),
    /// `EARLIEST_BY_OFFSET(x [, n] [, ignoreNulls])`: the first (n) values.
    Earliest(ByOffsetArgs),
    /// `COLLECT_LIST(x)`: the non-NULL values in arrival order.
    CollectList,
    /// `SUM_LIST(array)`: the sum of the non-NULL elements of every array.
    SumList,
    /// TOPK, TOPKDISTINCT, COLLECT_SET, HISTOGRAM, COUNT_DISTINCT, ATTR,
    /// STDDEV_SAMP: computed from the multiset of values.
    Multiset(crate::functions::agg::MultisetFunc),
    /// `CORRELATION(x, y)`: its argument is the pair `[x, y]` as a
    /// two-element DOUBLE array.
    Correlation,
}

/// One aggregate call of a [`StreamOp::Aggregate`].
#[derive(Debug, Clone)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// Its argument; `None` for `COUNT(*)`.
    pub arg: Option<Expr>,
}

/// A table function: one input row becomes zero or more output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFunc {
    /// `EXPLODE(array)`: one row per element.
    Explode,
    /// `CUBE_EXPLODE(array)`: one row per combination of the elements and
    /// NULL (2^n rows).
    CubeExplode,
}

impl TableFunc {
    /// The planning function's name (lower case), if `name` is one.
    pub fn from_name(name: &str) -> Option<TableFunc> {
        match name {
            "explode" => Some(TableFunc::Explode),
            "cube_explode" => Some(TableFunc::CubeExplode),
            _ => None,
        }
    }
}

/// One step of a stream pipeline.
#[derive(Debug, Clone)]
pub enum StreamOp {
    /// Keep rows where the predicate is true.
    Filter {
        /// Boolean expression.
        predicate: Expr,
        /// Schema of the rows it sees.
        input_schema: DFSchemaRef,
    },
    /// Compute new columns.
    Project {
        /// One expression per output column.
        exprs: Vec<Expr>,
        /// Schema of the rows it sees.
        input_schema: DFSchemaRef,
        /// Schema of the rows it produces.
        output_schema: DFSchemaRef,
    },
    /// Table functions: each row is repeated once per value of its longest
    /// table function; the output is the input columns, then one column
    /// per call (NULL where a call has fewer values).
    Explode {
        /// The calls and their array arguments.
        calls: Vec<(TableFunc, Expr)>,
        /// Schema of the rows it sees.
        input_schema: DFSchemaRef,
        /// Schema of the rows it produces.
        output_schema: DFSchemaRef,
    },
    /// Assigns each row to its windows: one row per window, with the
    /// window's bounds in two columns inserted before the pseudo-columns
    /// (`WINDOWSTART`, `WINDOWEND`). Rows too late for a window (its end
    /// plus the grace period is at or before stream time) are dropped.
    Window {
        /// The window.
        spec: crate::catalog::WindowSpec,
    },
    /// Grouped aggregation; output is group columns then aggregates.
    Aggregate {
        /// Grouping expressions.
        group: Vec<Expr>,
        /// Aggregate calls.
        aggs: Vec<AggCall>,
        /// Schema of the rows it sees.
        input_schema: DFSchemaRef,
        /// Schema of the rows it produces.
        output_schema: DFSchemaRef,
    },
}

/// INNER, LEFT, RIGHT or FULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Rows with a match on both sides.
    Inner,
    /// Every left row; NULLs where the right has no match.
    Left,
    /// Every right row; NULLs where the left has no match.
    Right,
    /// Every row of either side.
    Full,
}

/// `WITHIN (before, after) [GRACE PERIOD grace]` of a stream-stream join:
/// a left record at t joins right records in [t − before, t + after].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    /// How far back (ms) a right record may be.
    pub before_ms: i64,
    /// How far ahead (ms) a right record may be.
    pub after_ms: i64,
    /// `GRACE PERIOD`, if given.
    pub grace_ms: Option<i64>,
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The source read.
    pub source: SourceDef,
    /// Its alias in the query (the source's name when it has none).
    pub alias: String,
    /// The side's join expression, over the source's batch schema.
    pub key: Expr,
    /// The schema `key` is evaluated against.
    pub key_schema: DFSchemaRef,
    /// When this side is itself a join (the earlier steps of an n-way
    /// join; only ever the left side): that join. `source` is then its
    /// synthetic source.
    pub join: Option<Box<JoinSpec>>,
}

/// A binary join feeding the pipeline. Its output rows have the columns
/// of [`StreamPlan::source`] (a synthetic source): the synthetic key
/// `ROWKEY` when there is one, then each side's columns and
/// pseudo-columns named `<ALIAS>_<COLUMN>`, left first.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Join type.
    pub kind: JoinKind,
    /// Left input.
    pub left: JoinSide,
    /// Right input.
    pub right: JoinSide,
    /// Stream-stream joins: the window.
    pub window: Option<JoinWindow>,
    /// The output starts with a synthetic `ROWKEY` column holding the join
    /// value (FULL joins, and joins on expressions).
    pub synthetic_key: bool,
    /// A table-table join whose left side joins on something other than
    /// its primary key: each left row joins the right row its expression
    /// names, and the result is keyed by the left row's primary key.
    pub foreign_key: bool,
    /// The output column chosen as the result's key, when it is a join
    /// column: a row whose side is NULL-padded gets the join value there,
    /// as ksqlDB keys a join's result by the join value.
    pub key_column: Option<usize>,
}

impl JoinSpec {
    /// The steps of the join, first to last (one for a two-way join).
    pub fn steps(&self) -> Vec<&JoinSpec> {
        let mut steps = match &self.left.join {
            Some(earlier) => earlier.steps(),
            None => Vec::new(),
        };
        steps.push(self);
        steps
    }

    /// The sources joined, in the query's order.
    pub fn inputs(&self) -> Vec<&SourceDef> {
        let steps = self.steps();
        let mut inputs = vec![&steps[0].left.source];
        inputs.extend(steps.iter().map(|s| &s.right.source));
        inputs
    }
}

/// A continuous query over one source.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// The source read.
    pub source: SourceDef,
    /// Operators, in order.
    pub ops: Vec<StreamOp>,
    /// Schema of the output rows.
    pub output_schema: SchemaRef,
    /// Output columns that form the key (group columns, or the source key
    /// passed through).
    pub key_columns: Vec<usize>,
    /// The output is a table (it aggregates): changes are upserts by key.
    pub is_table: bool,
    /// `LIMIT n` of a push query.
    pub limit: Option<usize>,
    /// `PARTITION BY` computes the key: a key whose columns are all NULL
    /// is still written (rather than as no key).
    pub repartitioned: bool,
    /// The join producing the source's rows, when the query joins.
    pub join: Option<JoinSpec>,
    /// A windowed aggregation: the window, and the output columns holding
    /// each row's window bounds (not part of the result's columns; the
    /// sink writes them into the key).
    pub window: Option<(crate::catalog::WindowSpec, usize, usize)>,
    /// `EMIT FINAL`: a window's result is emitted once, when it closes.
    pub emit_final: bool,
    /// An aggregation emits one change per group per epoch (its state
    /// before and after the epoch) rather than one per input row: ksqlDB's
    /// record cache, on unless `cache.max.bytes.buffering` is 0.
    pub consolidate: bool,
}

impl StreamPlan {
    /// The plan as `EXPLAIN` prints it: one line per step, from the source
    /// to the sink (`sink` when it writes one).
    pub fn explain(&self, sink: Option<&str>) -> Vec<String> {
        let joined = |items: Vec<String>| items.join(", ");
        let schema = |s: &DFSchemaRef| -> String {
            joined(
                s.fields()
                    .iter()
                    .map(|f| {
                        let ty = crate::types::SqlType::from_arrow(f.data_type())
                            .map_or_else(|_| f.data_type().to_string(), |t| t.to_string());
                        format!("{} {ty}", f.name())
                    })
                    .collect(),
            )
        };
        let exprs = |es: &[Expr]| joined(es.iter().map(ToString::to_string).collect());
        let source_line = |s: &SourceDef| {
            format!(
                "SOURCE {} ({} over topic {})",
                s.name,
                s.kind.noun(),
                s.topic
            )
        };
        let mut lines = match &self.join {
            Some(j) => {
                let mut lines: Vec<String> = j.inputs().into_iter().map(source_line).collect();
                for step in j.steps() {
                    lines.push(format!(
                        "  {} JOIN ON {} = {}{}",
                        match step.kind {
                            JoinKind::Inner => "INNER",
                            JoinKind::Left => "LEFT",
                            JoinKind::Right => "RIGHT",
                            JoinKind::Full => "FULL",
                        },
                        step.left.key,
                        step.right.key,
                        step.window.map_or(String::new(), |w| format!(
                            " WITHIN ({} ms, {} ms){}",
                            w.before_ms,
                            w.after_ms,
                            w.grace_ms
                                .map_or(String::new(), |g| format!(" GRACE PERIOD {g} ms"))
                        ))
                    ));
                }
                lines
            }
            None => vec![source_line(&self.source)],
        };
        for op in &self.ops {
            lines.push(match op {
                StreamOp::Filter { predicate, .. } => format!("  FILTER {predicate}"),
                StreamOp::Project {
                    exprs: projected,
                    output_schema,
                    ..
                } => format!(
                    "  PROJECT {} | schema: {}",
                    exprs(projected),
                    schema(output_schema)
                ),
                StreamOp::Window { spec } => format!(
                    "  WINDOW {:?} SIZE {} ms ADVANCE {} ms GRACE {} ms",
                    spec.kind, spec.size_ms, spec.advance_ms, spec.grace_ms
                )
                .to_uppercase(),
                StreamOp::Explode { calls, .. } => format!(
                    "  EXPLODE {}",
                    joined(
                        calls
                            .iter()
                            .map(|(f, e)| format!("{}({e})", format!("{f:?}").to_uppercase()))
                            .collect()
                    )
                ),
                StreamOp::Aggregate {
                    group,
                    aggs,
                    output_schema,
                    ..
                } => format!(
                    "  AGGREGATE GROUP BY {} | {} | schema: {}",
                    exprs(group),
                    joined(
                        aggs.iter()
                            .map(|a| format!(
                                "{:?}({})",
                                a.func,
                                a.arg.as_ref().map_or("*".into(), ToString::to_string)
                            ))
                            .collect()
                    ),
                    schema(output_schema)
                ),
            });
        }
        if self.repartitioned {
            lines.push("  REKEY (PARTITION BY)".into());
        }
        let keys: Vec<&str> = self
            .key_columns
            .iter()
            .filter_map(|i| {
                self.output_schema
                    .fields()
                    .get(*i)
                    .map(|f| f.name().as_str())
            })
            .collect();
        lines.push(format!(
            "{} {} (key: {})",
            if sink.is_some() { "SINK" } else { "OUTPUT" },
            sink.unwrap_or(if self.is_table {
                "table changes"
            } else {
                "stream"
            }),
            if keys.is_empty() {
                "none".into()
            } else {
                keys.join(", ")
            }
        ));
        lines
    }

    /// The names of the sources the query reads.
    pub fn input_names(&self) -> Vec<String> {
        match &self.join {
            Some(j) => j.inputs().into_iter().map(|s| s.name.clone()).collect(),
            None => vec![self.source.name.clone()],
        }
    }

    /// Index of the aggregation step, if any.
    pub fn aggregate_index(&self) -> Option<usize> {
        self.ops
            .iter()
            .position(|op| matches!(op, StreamOp::Aggregate { .. }))
    }
}

impl fmt::Display for StreamPlan {
    /// `EXPLAIN`-style rendering, one operator per line, sink first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        writeln!(
            f,
            "StreamSink: columns=[{}] key={:?} table={}",
            names.join(", "),
            self.key_columns,
            self.is_table
        )?;
        let mut depth = 1;
        for op in self.ops.iter().rev() {
            let pad = "  ".repeat(depth);
            match op {
                StreamOp::Filter { predicate, .. } => {
                    writeln!(f, "{pad}StreamFilter: {predicate}")?
                }
                StreamOp::Project { exprs, .. } => {
                    let e: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                    writeln!(f, "{pad}StreamProject: {}", e.join(", "))?
                }
                StreamOp::Window { spec } => writeln!(f, "{pad}StreamWindow: {spec:?}")?,
                StreamOp::Explode { calls, .. } => {
                    let c: Vec<String> = calls.iter().map(|(t, e)| format!("{t:?}({e})")).collect();
                    writeln!(f, "{pad}StreamTableFunctions: {}", c.join(", "))?
                }
                StreamOp::Aggregate { group, aggs, .. } => {
                    let g: Vec<String> = group.iter().map(|e| e.to_string()).collect();
                    let a: Vec<String> = aggs
                        .iter()
                        .map(|a| {
                            format!(
                                "{:?}({})",
                                a.func,
                                a.arg.as_ref().map_or("*".into(), |e| e.to_string())
                            )
                        })
                        .collect();
                    writeln!(
                        f,
                        "{pad}StreamAggregate: group=[{}] aggs=[{}]",
                        g.join(", "),
                        a.join(", ")
                    )?
                }
            }
            depth += 1;
        }
        write!(
            f,
            "{}StreamSource: {}",
            "  ".repeat(depth),
            self.source.name
        )
    }
}

/// A pull query: a DataFusion plan over sources scanned as tables.
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// Analyzed logical plan; its table scans name catalog sources and use
    /// placeholder (empty) tables that the executor replaces with data.
    pub plan: LogicalPlan,
    /// The sources it reads.
    pub sources: Vec<SourceDef>,
}

/// A row to insert (`INSERT INTO … VALUES`): what the binder makes of it
/// and the engine writes.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertRow {
    /// `ROWTIME` if given.
    pub rowtime: Option<i64>,
    /// One value per declared column of the target, in its order.
    pub values: Vec<ScalarValue>,
}
