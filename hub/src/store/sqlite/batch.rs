//! Multi-row statements of a few fixed sizes, built once.
//!
//! SQLite has no array parameters, so a batch of rows becomes one statement
//! with `(?,?,…),(?,?,…)…`. sqlx caches prepared statements by SQL text: if
//! every batch produced a statement of a new length, each would be parsed
//! afresh and would evict useful entries. A [`ChunkedSql`] therefore only
//! knows power-of-two sizes up to its maximum, builds each text once, and
//! splits any row count into full chunks plus at most one of each smaller size
//! (the binary digits of the remainder), so at most `log2(max) + 1` distinct
//! statements ever exist per kind.

use std::sync::OnceLock;

/// Number of distinct sizes: 2^0 ..= 2^(SIZES-1).
const SIZES: usize = 11;

/// Largest chunk any statement may have (2^(SIZES-1)).
pub(crate) const MAX_CHUNK: usize = 1 << (SIZES - 1);

/// A family of multi-row statements differing only in their row count.
pub(crate) struct ChunkedSql {
    /// Rows per full chunk: a power of two, at most [`MAX_CHUNK`].
    max_rows: usize,
    /// Builds the statement for `n` rows.
    build: fn(usize) -> String,
    /// Statement text per size; index `i` holds the one for `2^i` rows.
    cache: [OnceLock<String>; SIZES],
}

impl ChunkedSql {
    /// A family whose largest statement has `max_rows` rows (a power of two,
    /// at most [`MAX_CHUNK`]; checked at compile time where used in a static).
    pub const fn new(max_rows: usize, build: fn(usize) -> String) -> ChunkedSql {
        assert!(max_rows.is_power_of_two() && max_rows <= MAX_CHUNK);
        ChunkedSql {
            max_rows,
            build,
            cache: [const { OnceLock::new() }; SIZES],
        }
    }

    /// Splits `rows` into chunks, each with the statement that takes exactly
    /// its length: full chunks first, then the remainder in descending powers
    /// of two.
    pub fn chunks<'r, T>(
        &'static self,
        rows: &'r [T],
    ) -> impl Iterator<Item = (&'static str, &'r [T])> {
        let mut rest = rows;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let size = if rest.len() >= self.max_rows {
                self.max_rows
            } else {
                // Highest power of two not above the remainder.
                1 << rest.len().ilog2()
            };
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            Some((self.sql(size), chunk))
        })
    }

    fn sql(&'static self, rows: usize) -> &'static str {
        let index = rows.trailing_zeros() as usize;
        self.cache[index].get_or_init(|| (self.build)(rows))
    }
}

/// `n` copies of a parenthesised group of `width` placeholders, comma-separated:
/// `(?,?),(?,?)` for `n = 2, width = 2`.
pub(crate) fn placeholders(n: usize, width: usize) -> String {
    let mut group = String::with_capacity(2 * width + 1);
    group.push('(');
    for i in 0..width {
        if i > 0 {
            group.push(',');
        }
        group.push('?');
    }
    group.push(')');
    let mut out = String::with_capacity(n * (group.len() + 1));
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: usize) -> String {
        format!("n={n}")
    }

    static FAMILY: ChunkedSql = ChunkedSql::new(8, build);

    #[test]
    fn chunks_cover_every_row_once_with_matching_statements() {
        for len in 0..40usize {
            let rows: Vec<usize> = (0..len).collect();
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            for (sql, chunk) in FAMILY.chunks(&rows) {
                assert_eq!(sql, format!("n={}", chunk.len()));
                assert!(chunk.len().is_power_of_two() && chunk.len() <= 8);
                sizes.push(chunk.len());
                seen.extend_from_slice(chunk);
            }
            assert_eq!(seen, rows, "len {len}");
            // After the full chunks, each smaller size appears at most once.
            let partial: Vec<_> = sizes.iter().filter(|&&s| s < 8).collect();
            let mut dedup = partial.clone();
            dedup.dedup();
            assert_eq!(partial, dedup, "len {len}: {sizes:?}");
        }
    }

    #[test]
    fn placeholders_shape() {
        assert_eq!(placeholders(1, 1), "(?)");
        assert_eq!(placeholders(2, 3), "(?,?,?),(?,?,?)");
    }
}
