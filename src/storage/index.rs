//! Sparse offset and time indexes of one segment, in Kafka's on-disk formats.
//!
//! Offset index: entries of (offset relative to the segment base u32, file position u32), one
//! every `index.interval.bytes` of log. Time index: entries of (timestamp i64, relative offset u32),
//! added with the offset index whenever the largest timestamp so far grew. Both are kept in memory
//! while the segment is active and written beside it when it is closed; on start they are loaded
//! if consistent with the segment, else rebuilt by scanning it.

/// In-memory index of one segment. Owned by the partition's core.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SegmentIndex {
    /// (relative offset, position), both strictly increasing.
    pub offsets: Vec<(u32, u32)>,
    /// (timestamp, relative offset), both strictly increasing.
    pub times: Vec<(i64, u32)>,
}

impl SegmentIndex {
    pub fn add(&mut self, rel_offset: u32, position: u32, max_ts_so_far: i64) {
        if self.offsets.last().is_none_or(|&(o, p)| rel_offset > o && position > p) {
            self.offsets.push((rel_offset, position));
        }
        if self.times.last().is_none_or(|&(t, o)| max_ts_so_far > t && rel_offset > o) {
            self.times.push((max_ts_so_far, rel_offset));
        }
    }

    /// Position of the last indexed batch starting at or before `rel_offset` (0 if none).
    pub fn position_for(&self, rel_offset: u32) -> u32 {
        match self.offsets.partition_point(|&(o, _)| o <= rel_offset) {
            0 => 0,
            i => self.offsets[i - 1].1,
        }
    }

    /// Relative offset from which to scan for the first record with timestamp >= `ts`.
    pub fn offset_for_time(&self, ts: i64) -> u32 {
        match self.times.partition_point(|&(t, _)| t < ts) {
            0 => 0,
            i => self.times[i - 1].1,
        }
    }

    /// Drops entries at or past `position` (after a tail truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        self.offsets.retain(|&(_, p)| p < position);
        let last_off = self.offsets.last().map(|&(o, _)| o);
        self.times.retain(|&(_, o)| last_off.is_some_and(|l| o <= l));
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.offsets.len() * 8);
        for &(o, p) in &self.offsets {
            v.extend_from_slice(&o.to_be_bytes());
            v.extend_from_slice(&p.to_be_bytes());
        }
        v
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.times.len() * 12);
        for &(t, o) in &self.times {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&o.to_be_bytes());
        }
        v
    }

    /// Decodes both files; `None` if either is malformed (not a whole number of entries, or not
    /// strictly increasing). Consistency with the segment is checked by the caller.
    pub fn decode(offsets: &[u8], times: &[u8]) -> Option<SegmentIndex> {
        if offsets.len() % 8 != 0 || times.len() % 12 != 0 {
            return None;
        }
        let mut idx = SegmentIndex::default();
        for e in offsets.chunks_exact(8) {
            let o = u32::from_be_bytes(e[0..4].try_into().ok()?);
            let p = u32::from_be_bytes(e[4..8].try_into().ok()?);
            if idx.offsets.last().is_some_and(|&(lo, lp)| o <= lo || p <= lp) {
                return None;
            }
            idx.offsets.push((o, p));
        }
        for e in times.chunks_exact(12) {
            let t = i64::from_be_bytes(e[0..8].try_into().ok()?);
            let o = u32::from_be_bytes(e[8..12].try_into().ok()?);
            if idx.times.last().is_some_and(|&(lt, lo)| t <= lt || o <= lo) {
                return None;
            }
            idx.times.push((t, o));
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_round_trip() {
        let mut i = SegmentIndex::default();
        i.add(0, 0, 10);
        i.add(10, 4096, 20);
        i.add(20, 8192, 15); // timestamp went back: no time entry
        i.add(30, 12288, 40);
        assert_eq!(i.position_for(0), 0);
        assert_eq!(i.position_for(15), 4096);
        assert_eq!(i.position_for(99), 12288);
        assert_eq!(i.offset_for_time(5), 0);
        assert_eq!(i.offset_for_time(20), 0);
        assert_eq!(i.offset_for_time(21), 10);
        assert_eq!(i.offset_for_time(41), 30);
        let back = SegmentIndex::decode(&i.encode_offsets(), &i.encode_times()).unwrap();
        assert_eq!(back, i);
        assert!(SegmentIndex::decode(&[0; 7], &[]).is_none());
        i.truncate_to_position(8192);
        assert_eq!(i.offsets.len(), 2);
        assert_eq!(i.times, vec![(10, 0), (20, 10)]);
    }
}
