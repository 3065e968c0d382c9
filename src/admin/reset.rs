//! `spate group reset-offsets`: new committed offsets for a group that has no active members,
//! as Kafka's `kafka-consumer-groups.sh --reset-offsets` computes them. The plan (TOPIC PARTITION
//! OLD NEW) is always printed; it is committed only with `--execute`, with OffsetCommit at
//! generation -1 and no member id, which a coordinator accepts only while the group is empty.
//!
//! New offsets are clamped to each partition's [earliest, latest] (ListOffsets), as Kafka does.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use super::cluster::{codes, Cluster, Tp, EARLIEST, LATEST};
use super::{describe_error, report, table, Output};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
#[command(group(
    ArgGroup::new("strategy").required(true).args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"])
))]
pub struct ResetArgs {
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// TOPIC (all its partitions) or TOPIC:P1,P2,...; repeatable.
    #[arg(long, value_name = "TOPIC[:PARTITIONS]", value_parser = parse_topic_spec)]
    pub topic: Vec<TopicSpec>,
    /// Every partition the group has committed offsets for.
    #[arg(long)]
    pub all_topics: bool,
    /// The earliest offset still in the log.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end (skip everything not yet consumed).
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (clamped to the log's range).
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    pub to_offset: Option<i64>,
    /// The committed offset plus N, N may be negative (clamped to the log's range).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// The first record at or after this time: RFC 3339 (2024-05-01T12:00:00Z,
    /// 2024-05-01T14:00:00.250+02:00) or milliseconds since the epoch. The log end if none is.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to_datetime: Option<i64>,
    /// Commit the new offsets (without it, only the plan is shown).
    #[arg(long)]
    pub execute: bool,
    /// Only show the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
}

/// `--topic` as given: a topic and, optionally, some of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
}

pub fn parse_topic_spec(s: &str) -> std::result::Result<TopicSpec, String> {
    let (topic, partitions) = match s.split_once(':') {
        None => (s, None),
        Some((t, ps)) => {
            let ps: std::result::Result<Vec<i32>, _> = ps.split(',').map(|p| p.trim().parse::<i32>()).collect();
            match ps {
                Ok(ps) if ps.iter().all(|p| *p >= 0) => (t, Some(ps)),
                _ => return Err("partitions must be a comma-separated list of numbers, as in topic:0,1,2".to_string()),
            }
        }
    };
    if topic.is_empty() {
        return Err("empty topic name".to_string());
    }
    Ok(TopicSpec { topic: topic.to_string(), partitions })
}

/// Milliseconds since the epoch, given as such or as an RFC 3339 time with a zone.
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| format!("{e}"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        "neither milliseconds since the epoch nor an RFC 3339 time with a zone \
         (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.250+02:00)"
            .to_string()
    })
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let t = s.get(from..to)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0, 4)?, num(5, 7)?, num(8, 10)?, num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut frac: String = f[..digits].chars().take(3).collect();
        while frac.len() < 3 {
            frac.push('0');
        }
        ms = frac.parse().ok()?;
        rest = &f[digits..];
    }
    let zone_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (zh, zm) = (num(s.len() - 5, s.len() - 3)?, num(s.len() - 2, s.len())?);
            if zh > 23 || zm > 59 {
                return None;
            }
            sign * (zh * 60 + zm)
        }
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - zone_minutes * 60;
    Some(seconds * 1000 + ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where the new offsets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl ResetArgs {
    fn strategy(&self) -> Strategy {
        if self.to_earliest {
            Strategy::Earliest
        } else if self.to_latest {
            Strategy::Latest
        } else if let Some(o) = self.to_offset {
            Strategy::Offset(o)
        } else if let Some(n) = self.shift_by {
            Strategy::ShiftBy(n)
        } else if let Some(t) = self.to_datetime {
            Strategy::Time(t)
        } else {
            unreachable!("clap requires one strategy")
        }
    }
}

/// A partition's new offset: within [earliest, latest]. `at_time` is ListOffsets' answer for
/// [`Strategy::Time`] (-1 when no record is that recent: the log end).
pub fn new_offset(s: Strategy, committed: Option<i64>, earliest: i64, latest: i64, at_time: Option<i64>) -> std::result::Result<i64, String> {
    let want = match s {
        Strategy::Earliest => earliest,
        Strategy::Latest => latest,
        Strategy::Offset(o) => o,
        Strategy::ShiftBy(n) => match committed {
            Some(c) => c.saturating_add(n),
            None => return Err("no committed offset to shift; use --to-offset, --to-earliest or --to-latest".to_string()),
        },
        Strategy::Time(_) => match at_time {
            Some(o) if o >= 0 => o,
            _ => latest,
        },
    };
    Ok(want.clamp(earliest, latest.max(earliest)))
}

#[derive(Serialize)]
struct PlanJson<'a> {
    group: &'a str,
    executed: bool,
    offsets: Vec<PlannedJson>,
}

#[derive(Serialize)]
struct PlannedJson {
    topic: String,
    partition: i32,
    old: Option<i64>,
    new: i64,
}

pub fn run(c: &mut Cluster, out: &Output, a: &ResetArgs) -> Result<bool> {
    let group = a.group.as_str();
    if let Some(d) = c.describe_group(group)? {
        if !d.members.is_empty() || !matches!(d.state.as_str(), "Empty" | "Dead") {
            let n = d.members.len();
            bail!(
                "cannot reset the offsets of group '{group}': group has active members; stop the consumers first \
                 (state {}, {n} member{})",
                d.state,
                if n == 1 { "" } else { "s" }
            );
        }
    }
    let committed = c.committed(group)?;
    let targets = targets(c, a, group, &committed)?;
    let strategy = a.strategy();
    let bound = |c: &mut Cluster, at: i64| -> Result<BTreeMap<Tp, i64>> {
        c.list_offsets(&targets, at)?
            .into_iter()
            .map(|((t, p), r)| match r {
                Ok(o) => Ok(((t, p), o)),
                Err(e) => Err(anyhow!("reading the offsets of {t}-{p}: {e}")),
            })
            .collect()
    };
    let earliest = bound(&mut *c, EARLIEST)?;
    let latest = bound(&mut *c, LATEST)?;
    let at_time = match strategy {
        Strategy::Time(ms) => Some(bound(&mut *c, ms)?),
        _ => None,
    };
    let mut plan = Vec::new();
    for tp in &targets {
        let old = committed.get(tp).copied();
        let new = new_offset(strategy, old, earliest[tp], latest[tp], at_time.as_ref().map(|m| m[tp]))
            .map_err(|e| anyhow!("{}-{}: {e}", tp.0, tp.1))?;
        plan.push(PlannedJson { topic: tp.0.clone(), partition: tp.1, old, new });
    }
    if a.execute {
        let offsets: BTreeMap<Tp, i64> = plan.iter().map(|p| ((p.topic.clone(), p.partition), p.new)).collect();
        let results = c.commit(group, &offsets)?;
        let failed: Vec<_> = results.iter().filter(|(_, code)| *code != 0).collect();
        if let Some((_, code)) = failed.iter().find(|(_, code)| {
            matches!(*code, codes::UNKNOWN_MEMBER_ID | codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION)
        }) {
            bail!("cannot commit the new offsets of group '{group}': {}", describe_error(*code, None));
        }
        for ((t, p), code) in &failed {
            report(&format!("committing {t}-{p} for group '{group}': {}", describe_error(*code, None)));
        }
        if !failed.is_empty() {
            return Ok(false);
        }
    }
    if out.json {
        out.json(&PlanJson { group, executed: a.execute, offsets: plan });
    } else {
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|p| {
                let old = p.old.map_or_else(|| "-".to_string(), |o| o.to_string());
                vec![p.topic.clone(), p.partition.to_string(), old, p.new.to_string()]
            })
            .collect();
        print!("{}", table(&["TOPIC", "PARTITION", "OLD", "NEW"], &rows));
    }
    if a.execute {
        eprintln!("committed the new offsets of group '{group}'");
    } else {
        eprintln!("dry run; add --execute to commit these offsets");
    }
    Ok(true)
}

/// The partitions to reset: those named with `--topic` (checked against Metadata), or with
/// `--all-topics` those the group has committed offsets for (as Kafka's tool does).
fn targets(c: &mut Cluster, a: &ResetArgs, group: &str, committed: &BTreeMap<Tp, i64>) -> Result<Vec<Tp>> {
    if a.all_topics {
        if committed.is_empty() {
            bail!("group '{group}' has no committed offsets; name the topics with --topic");
        }
        return Ok(committed.keys().cloned().collect());
    }
    let names: Vec<String> = a.topic.iter().map(|t| t.topic.clone()).collect();
    let (_, topics) = c.metadata(&names)?;
    let mut out = Vec::new();
    for spec in &a.topic {
        let t = &spec.topic;
        let meta = match topics.get(t) {
            Some(m) if m.error == 0 => m,
            Some(m) => bail!("topic '{t}': {}", describe_error(m.error, None)),
            None => bail!("topic '{t}': {}", describe_error(3, None)),
        };
        match &spec.partitions {
            None => out.extend(meta.partitions.keys().map(|p| (t.clone(), *p))),
            Some(ps) => {
                for p in ps {
                    if !meta.partitions.contains_key(p) {
                        bail!("topic '{t}' has no partition {p} (it has {})", meta.partitions.len());
                    }
                    out.push((t.clone(), *p));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(parse_time("2024-05-01T14:00:00.25+02:00"), Ok(1_714_564_800_250));
        assert_eq!(parse_time("2024-05-01t11:30:00.123456-00:30"), Ok(1_714_564_800_123));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time("1714564800000"), Ok(1_714_564_800_000));
        for bad in ["", "2001-02-29T00:00:00Z", "2024-05-01T12:00:00", "2024-05-01T24:00:00Z", "2024-05-01", "-5", "2024-05-01T12:00:00.Z"] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn topic_specs_name_partitions_optionally() {
        assert_eq!(parse_topic_spec("t"), Ok(TopicSpec { topic: "t".into(), partitions: None }));
        assert_eq!(parse_topic_spec("a.b-c:0,2"), Ok(TopicSpec { topic: "a.b-c".into(), partitions: Some(vec![0, 2]) }));
        for bad in ["", ":1", "t:", "t:x", "t:-1", "t:1,,2"] {
            assert!(parse_topic_spec(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn new_offsets_are_clamped_to_the_log() {
        let (e, l) = (5, 20);
        assert_eq!(new_offset(Strategy::Earliest, Some(10), e, l, None), Ok(5));
        assert_eq!(new_offset(Strategy::Latest, None, e, l, None), Ok(20));
        assert_eq!(new_offset(Strategy::Offset(12), None, e, l, None), Ok(12));
        assert_eq!(new_offset(Strategy::Offset(0), None, e, l, None), Ok(5));
        assert_eq!(new_offset(Strategy::Offset(99), None, e, l, None), Ok(20));
        assert_eq!(new_offset(Strategy::ShiftBy(-3), Some(10), e, l, None), Ok(7));
        assert_eq!(new_offset(Strategy::ShiftBy(-30), Some(10), e, l, None), Ok(5));
        assert_eq!(new_offset(Strategy::ShiftBy(30), Some(10), e, l, None), Ok(20));
        assert_eq!(new_offset(Strategy::ShiftBy(i64::MAX), Some(10), e, l, None), Ok(20));
        assert!(new_offset(Strategy::ShiftBy(1), None, e, l, None).is_err());
        assert_eq!(new_offset(Strategy::Time(0), None, e, l, Some(8)), Ok(8));
        assert_eq!(new_offset(Strategy::Time(0), None, e, l, Some(-1)), Ok(20));
        // An empty log: earliest == latest.
        assert_eq!(new_offset(Strategy::Offset(3), None, 0, 0, None), Ok(0));
    }
}
