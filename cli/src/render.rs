//! Aligned text tables, as psql and ksqlDB's CLI print them.

/// Renders a table with a header; `None` cells print as `null`.
pub fn table(header: &[String], rows: &[Vec<Option<String>>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.as_deref().unwrap_or("null").chars().count());
            }
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("|{:<w$}", format!(" {c} "), w = w + 2))
            .collect::<String>()
            + "|\n"
    };
    let mut out = sep.clone();
    out += &line(header.iter().map(String::as_str).collect());
    out += &sep;
    for row in rows {
        out += &line(row.iter().map(|c| c.as_deref().unwrap_or("null")).collect());
    }
    out += &sep;
    out
}

/// One live row of a push query.
pub fn live_row(cells: &[Option<String>]) -> String {
    let parts: Vec<&str> = cells
        .iter()
        .map(|c| c.as_deref().unwrap_or("null"))
        .collect();
    format!("| {} |", parts.join(" | "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::table(
            &["A".into(), "LONGER".into()],
            &[vec![Some("12345".into()), None]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "| A     | LONGER |");
        assert_eq!(lines[3], "| 12345 | null   |");
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
    }
}
