//! Helpers shared by the server's integration tests.

use std::sync::Arc;

use brook_server::{Brook, Output};

/// The rows of the last statement of `sql` (a pull query), each as its
/// cells' text joined by spaces, in the order the query returned them.
pub async fn rows(brook: &Arc<Brook>, sql: &str) -> Vec<String> {
    let out = brook.session().execute(sql).await.unwrap();
    let Some(Output::Rows { batches, .. }) = out.into_iter().next_back() else {
        panic!("expected rows for {sql}");
    };
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                b.columns()
                    .iter()
                    .map(|c| brook_server::render::cell_text(c.as_ref(), r).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .collect()
}

/// Inserts rows `(i % 7, i)` into the stream `s (id, v)` in one statement
/// (one epoch), then waits for the queries with FLUSH.
#[allow(dead_code)] // Not every test file that shares this module inserts.
pub async fn insert_in_one_epoch(brook: &Arc<Brook>, rows: std::ops::Range<i32>) {
    let values: Vec<String> = rows.map(|i| format!("({}, {i})", i % 7)).collect();
    brook
        .session()
        .execute(&format!(
            "INSERT INTO s (id, v) VALUES {}; FLUSH;",
            values.join(", ")
        ))
        .await
        .unwrap();
}
