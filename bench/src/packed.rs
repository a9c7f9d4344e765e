//! Byte strings packed one after another in one buffer: the pre-encoded requests of a load
//! and the answers they must get, read by index in the load loop with no allocation per
//! item.

/// Items appended one after another, each found by where it ends.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Packed {
    /// Room for `items` items of about `item_bytes` bytes each.
    pub fn with_capacity(items: usize, item_bytes: usize) -> Packed {
        Packed {
            bytes: Vec::with_capacity(items * item_bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// The buffer to append the next item's bytes to; [`Packed::end_item`] closes it.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Ends the item being appended.
    pub fn end_item(&mut self) {
        self.ends.push(self.bytes.len());
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of every item together.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Item `i`.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_by_index() {
        let mut packed = Packed::with_capacity(3, 4);
        for item in [&b"ab"[..], b"", b"cde"] {
            packed.buf().extend_from_slice(item);
            packed.end_item();
        }
        assert_eq!((packed.len(), packed.total_bytes()), (3, 5));
        assert_eq!(
            (packed.get(0), packed.get(1), packed.get(2)),
            (&b"ab"[..], &b""[..], &b"cde"[..])
        );
    }
}
