//! The changes read from the fleet's stream that this node refused as copies, by sequence,
//! written by the store thread before it tells anyone the sequence is applied: a node
//! whose own change is one of them (two changes made from one state both stored; the fleet
//! took the first) answers `conflict`, not success.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Most sequences kept: far more than can be refused while one change waits to be applied.
const KEPT: usize = 65_536;

#[derive(Debug, Default)]
pub struct RefusedChanges {
    seqs: Mutex<VecDeque<u64>>,
}

impl RefusedChanges {
    pub fn note(&self, refused: &[u64]) {
        if refused.is_empty() {
            return;
        }
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        for &seq in refused {
            if seqs.len() == KEPT {
                seqs.pop_front();
            }
            seqs.push_back(seq);
        }
    }

    /// Whether any of `seqs` was refused.
    pub fn any(&self, seqs: &[u64]) -> bool {
        let refused = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        seqs.iter().any(|seq| refused.contains(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_sequence_is_found_and_the_oldest_go_first() {
        let refused = RefusedChanges::default();
        refused.note(&[3, 9]);
        assert!(refused.any(&[1, 9]));
        assert!(!refused.any(&[4]));
        let many: Vec<u64> = (100..100 + KEPT as u64).collect();
        refused.note(&many);
        assert!(!refused.any(&[3]) && refused.any(&[100]));
    }
}
