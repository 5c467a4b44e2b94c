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
