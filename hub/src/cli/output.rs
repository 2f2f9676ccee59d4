//! Shared text formatting for the admin commands: aligned tables and times.

use crate::api::time::format_ms;

/// A time for people; `-` when absent.
pub(crate) fn time_or_dash(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), format_ms)
}

/// Left-aligned columns separated by two spaces, one line per row, with a
/// header line. Widths count characters, not bytes.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One JSON object on one line, newline-terminated.
pub(crate) fn json_line(value: &serde_json::Value) -> String {
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let out = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "kitchen".into()],
                vec!["bbbb".into(), "é".into()],
            ],
        );
        assert_eq!(out, "ID    NAME\na     kitchen\nbbbb  é\n");
    }

    #[test]
    fn absent_time_is_a_dash() {
        assert_eq!(time_or_dash(None), "-");
        assert_eq!(time_or_dash(Some(0)), "1970-01-01T00:00:00.000Z");
    }
}
