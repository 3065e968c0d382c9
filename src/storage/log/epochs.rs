//! The leader-epoch cache of a partition (Kafka's `leader-epoch-checkpoint`, KIP-101/279): for
//! each leader epoch the partition has had, the first offset written in it. The leader stamps
//! every batch it appends with its current epoch; OffsetForLeaderEpoch answers from here where an
//! epoch ended, which a consumer (KIP-320) or a returning replica uses to find what a new leader
//! never had. A single node stays at epoch 0 from offset 0; in a cluster the metadata log's
//! leader epoch reaches the partition when its broker installs an image (`set_leader_epoch`).
//!
//! Stored in Kafka's text format: the version (0), the number of entries, then one
//! `epoch start_offset` line per entry, replaced atomically and durably each time an epoch is
//! added (`PartitionLog::set_leader_epoch`, which returns only once it is written; batches
//! appended while the write is under way already carry the new epoch).

/// The cache: `(epoch, start offset)`, epochs and offsets increasing, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

impl Default for LeaderEpochs {
    fn default() -> LeaderEpochs {
        LeaderEpochs { entries: vec![(0, 0)] }
    }
}

impl LeaderEpochs {
    /// Parses the file's text; None if it is not Kafka's format version 0 with increasing
    /// entries.
    pub fn decode(text: &str) -> Option<LeaderEpochs> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next()? != "0" {
            return None;
        }
        let count: usize = lines.next()?.parse().ok()?;
        let mut entries = Vec::with_capacity(count.min(1024));
        for line in lines {
            let (e, o) = line.split_once(' ')?;
            let entry: (i32, i64) = (e.trim().parse().ok()?, o.trim().parse().ok()?);
            if entries.last().is_some_and(|&(pe, po): &(i32, i64)| entry.0 <= pe || entry.1 < po) || entry.0 < 0 || entry.1 < 0 {
                return None;
            }
            entries.push(entry);
        }
        (entries.len() == count && count > 0).then_some(LeaderEpochs { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        s.into_bytes()
    }

    /// The current (latest) epoch.
    pub fn latest(&self) -> i32 {
        self.entries.last().expect("never empty").0
    }

    /// Drops the epochs that start past `log_end` (their records were lost with a torn tail, or
    /// truncated away); returns whether anything changed. The first entry stays.
    pub fn truncate_to(&mut self, log_end: i64) -> bool {
        let before = self.entries.len();
        while self.entries.len() > 1 && self.entries.last().is_some_and(|&(_, o)| o > log_end) {
            self.entries.pop();
        }
        before != self.entries.len()
    }

    /// Epoch `epoch` starts at `start` (the log end when this broker becomes its leader).
    /// Entries starting at or after `start` are replaced (Kafka's assign); an epoch not above
    /// the latest changes nothing. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        if epoch <= self.latest() {
            return false;
        }
        while self.entries.len() > 1 && self.entries.last().is_some_and(|&(_, o)| o >= start) {
            self.entries.pop();
        }
        if self.entries.len() == 1 && self.entries[0].1 >= start {
            self.entries[0] = (epoch, start);
        } else {
            self.entries.push((epoch, start));
        }
        true
    }

    /// Where `asked` ended, as Kafka's `endOffsetFor` answers: the latest epoch ends at the
    /// log end; an older one at the start of the next epoch above it, named by the largest
    /// epoch not above `asked` (or `asked` itself when it is older than every entry); an epoch
    /// above the latest is unknown, (-1, -1).
    pub fn end_offset_for(&self, asked: i32, log_end: i64) -> (i32, i64) {
        if asked == self.latest() {
            return (asked, log_end);
        }
        let Some(higher) = self.entries.iter().find(|&&(e, _)| e > asked) else {
            return (-1, -1);
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= asked) {
            Some(&(floor, _)) => (floor, higher.1),
            None => (asked, higher.1),
        }
    }

    /// The epoch the record at `offset` was written in (the latest entry starting at or below
    /// it).
    pub fn epoch_at(&self, offset: i64) -> i32 {
        self.entries.iter().rev().find(|&&(_, o)| o <= offset).map_or(self.entries[0].0, |&(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_format_round_trips_and_bad_text_is_refused() {
        let mut c = LeaderEpochs::default();
        assert_eq!(c.encode(), b"0\n1\n0 0\n");
        assert!(c.assign(3, 100));
        assert!(c.assign(5, 250));
        assert_eq!(LeaderEpochs::decode(std::str::from_utf8(&c.encode()).unwrap()), Some(c.clone()));
        for bad in ["", "1\n1\n0 0\n", "0\n2\n0 0\n", "0\n2\n3 10\n2 20\n", "0\n1\nx 0\n", "0\n0\n"] {
            assert_eq!(LeaderEpochs::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn end_offsets_answer_as_kafka_does() {
        let mut c = LeaderEpochs::default();
        c.assign(2, 100);
        c.assign(4, 300);
        assert_eq!(c.latest(), 4);
        assert_eq!(c.end_offset_for(4, 500), (4, 500), "the latest epoch ends at the log end");
        assert_eq!(c.end_offset_for(2, 500), (2, 300));
        assert_eq!(c.end_offset_for(3, 500), (2, 300), "an epoch never seen: the largest below it");
        assert_eq!(c.end_offset_for(0, 500), (0, 100));
        assert_eq!(c.end_offset_for(7, 500), (-1, -1), "an epoch above the latest is unknown");
        assert_eq!((c.epoch_at(0), c.epoch_at(99), c.epoch_at(100), c.epoch_at(450)), (0, 0, 2, 4));
        // The first epoch started later than 0 (a log that starts at epoch 2, say).
        let mut d = LeaderEpochs::default();
        d.assign(2, 0);
        d.assign(3, 10);
        assert_eq!(d.end_offset_for(1, 20), (1, 0), "older than every entry: itself, ending where the first starts");
    }

    #[test]
    fn assign_replaces_what_starts_at_or_after_and_truncation_drops_lost_epochs() {
        let mut c = LeaderEpochs::default();
        assert!(!c.assign(0, 10), "not above the latest");
        assert!(c.assign(1, 0), "epoch 1 from the start replaces epoch 0's empty range");
        assert_eq!(c.encode(), b"0\n1\n1 0\n");
        c.assign(2, 50);
        assert!(c.assign(3, 50), "two leaderships with nothing written between them");
        assert_eq!(c.encode(), b"0\n2\n1 0\n3 50\n");
        assert!(c.truncate_to(40), "the epoch starting at 50 lost its records");
        assert_eq!(c.latest(), 1);
        assert!(!c.truncate_to(0), "the first entry stays");
    }
}
