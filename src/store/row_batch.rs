//! Key rows read at start-up, passed in batches from the thread that reads SQLite to the
//! one that opens them: the two halves of a large store's start-up run on two cores.
//!
//! A batch copies its rows' bytes into two buffers it keeps, so that a batch sent back
//! empty is filled again without allocating.

use crate::key::UsageRow;
use std::ops::Range;

/// Rows per batch: enough that handing a batch over costs nothing per row, few enough that
/// the opening thread starts at once.
const ROWS: usize = 256;

/// One key row as read: its id, plaintext token hash, sealed record, and usage (opened).
pub(super) struct KeyRow<'a> {
    pub id: &'a str,
    pub hash: &'a [u8],
    pub sealed: &'a [u8],
    pub usage: Option<&'a [u8]>,
    pub usage_row: UsageRow,
}

/// Where one row's fields sit in the batch's buffers.
struct Spans {
    id: Range<usize>,
    hash: Range<usize>,
    sealed: Range<usize>,
    usage: Option<Range<usize>>,
    usage_row: UsageRow,
}

#[derive(Default)]
pub(super) struct RowBatch {
    ids: String,
    bytes: Vec<u8>,
    rows: Vec<Spans>,
}

impl RowBatch {
    pub fn push(&mut self, row: KeyRow<'_>) {
        let start = self.ids.len();
        self.ids.push_str(row.id);
        let id = start..self.ids.len();
        let hash = self.copy(row.hash);
        let sealed = self.copy(row.sealed);
        let usage = row.usage.map(|usage| self.copy(usage));
        self.rows.push(Spans {
            id,
            hash,
            sealed,
            usage,
            usage_row: row.usage_row,
        });
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() >= ROWS
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.bytes.clear();
        self.rows.clear();
    }

    pub fn rows(&self) -> impl Iterator<Item = KeyRow<'_>> {
        self.rows.iter().map(|spans| KeyRow {
            id: &self.ids[spans.id.clone()],
            hash: &self.bytes[spans.hash.clone()],
            sealed: &self.bytes[spans.sealed.clone()],
            usage: spans.usage.clone().map(|usage| &self.bytes[usage]),
            usage_row: spans.usage_row,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_each_row_as_pushed_and_can_be_filled_again() {
        let mut batch = RowBatch::default();
        for round in 0..2 {
            for n in 0..ROWS {
                let id = format!("key_{round}_{n}");
                let usage = [n as u8; 3];
                batch.push(KeyRow {
                    id: &id,
                    hash: &[1, 2],
                    sealed: &[n as u8; 7],
                    usage: (n % 2 == 0).then_some(usage.as_slice()),
                    usage_row: UsageRow::UNKNOWN,
                });
            }
            assert!(batch.is_full());
            for (n, row) in batch.rows().enumerate() {
                assert_eq!(row.id, format!("key_{round}_{n}"));
                assert_eq!(row.hash, &[1, 2]);
                assert_eq!(row.sealed, &[n as u8; 7]);
                assert_eq!(row.usage.map(<[u8]>::len), (n % 2 == 0).then_some(3));
            }
            batch.clear();
            assert!(batch.is_empty());
        }
    }
}
