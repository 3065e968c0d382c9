//! The aborted-transaction index of one segment, in Kafka's `.txnindex` format: one 34-byte entry
//! per transaction aborted by a marker in that segment (version i16 = 0, producer id, first
//! offset, last offset (the marker's), and the last stable offset just after the abort), in
//! marker order. Kept in memory while the segment is active and written beside it when it
//! closes; recovery reloads it and rebuilds the entries of the batches it replays (see
//! `log::recovery`). A `read_committed` Fetch lists the aborted transactions overlapping what it
//! returns, so the client drops their records.

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The ABORT marker's offset.
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction was closed (its other open
    /// transactions' first offset, or the log end after the marker).
    pub last_stable_offset: i64,
}

/// Bytes per entry on disk.
pub const ENTRY_BYTES: usize = 34;

pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&0i16.to_be_bytes());
        for v in [e.producer_id, e.first_offset, e.last_offset, e.last_stable_offset] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out
}

/// The entries of a `.txnindex` file; `None` if it is damaged (a length that is not a multiple
/// of the entry, an unknown version, or last offsets that do not increase). The caller then
/// rebuilds the segment's entries by replaying it.
pub fn decode(bytes: &[u8]) -> Option<Vec<AbortedTxn>> {
    if bytes.len() % ENTRY_BYTES != 0 {
        return None;
    }
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for e in bytes.chunks_exact(ENTRY_BYTES) {
        if i16::from_be_bytes([e[0], e[1]]) != 0 {
            return None;
        }
        let at = |i: usize| i64::from_be_bytes(e[2 + 8 * i..10 + 8 * i].try_into().expect("8 bytes"));
        let t = AbortedTxn { producer_id: at(0), first_offset: at(1), last_offset: at(2), last_stable_offset: at(3) };
        if t.first_offset > t.last_offset || out.last().is_some_and(|p| p.last_offset >= t.last_offset) {
            return None;
        }
        out.push(t);
    }
    Some(out)
}

/// Adds `t` to a segment's entries (kept in marker order); a marker seen twice (a replay over
/// entries loaded from the file) is kept once.
pub fn insert(entries: &mut Vec<AbortedTxn>, t: AbortedTxn) {
    match entries.binary_search_by_key(&t.last_offset, |e| e.last_offset) {
        Ok(_) => {}
        Err(i) => entries.insert(i, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let entries = vec![
            AbortedTxn { producer_id: 7, first_offset: 10, last_offset: 15, last_stable_offset: 16 },
            AbortedTxn { producer_id: 9, first_offset: 12, last_offset: 20, last_stable_offset: 21 },
        ];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 2 * ENTRY_BYTES);
        // Version 0, then the producer id, big-endian, as Kafka's AbortedTxn writes it.
        assert_eq!(&bytes[..10], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(decode(&bytes), Some(entries));
        assert_eq!(decode(&bytes[..33]), None, "a torn entry");
        let mut swapped = encode(&[AbortedTxn { producer_id: 1, first_offset: 5, last_offset: 4, last_stable_offset: 6 }]);
        assert_eq!(decode(&swapped), None, "first offset past the marker");
        swapped[1] = 1;
        assert_eq!(decode(&swapped), None, "an unknown version");
    }

    #[test]
    fn a_replayed_marker_is_kept_once_in_order() {
        let t = |last| AbortedTxn { producer_id: 1, first_offset: 0, last_offset: last, last_stable_offset: last + 1 };
        let mut v = vec![t(3), t(9)];
        insert(&mut v, t(5));
        insert(&mut v, t(9));
        assert_eq!(v, vec![t(3), t(5), t(9)]);
    }
}
