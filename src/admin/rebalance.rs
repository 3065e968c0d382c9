//! `spate cluster rebalance` and `spate cluster decommission N`: partition moves computed here
//! from Metadata and made with AlterPartitionReassignments (the brokers copy the data while
//! serving; see `server::handlers::reassignments`), then followed with
//! ListPartitionReassignments until none is left, with a progress line per change; a rebalance
//! ends with a preferred-leader election (ElectLeaders) so leadership is even too.
//!
//! The plan keeps each partition's replication factor and moves as little as it can: replicas on
//! brokers that are gone go to the live brokers holding fewest; then one replica at a time
//! moves from the broker holding most to the broker holding fewest until they differ by at
//! most one; then preferred leaders (each partition's first replica) are evened the same way
//! by reordering replicas. Decommission moves every replica off one broker to the live brokers
//! holding fewest and leaves the rest alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::cluster::Cluster;
use super::{error_name, report, table, Output};

/// How long `--wait` follows the moves before giving up (they go on in the cluster).
const WAIT_MAX: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
}

/// The replicas of every partition: (topic, partition) -> replicas.
type Layout = BTreeMap<(String, i32), Vec<i32>>;

/// A balanced layout over `live` brokers (see the module doc).
pub fn plan_rebalance(layout: &Layout, live: &[i32]) -> Result<Vec<Move>> {
    if live.is_empty() {
        bail!("no live broker");
    }
    let mut next = layout.clone();
    let mut held: BTreeMap<i32, usize> = live.iter().map(|b| (*b, 0)).collect();
    for ((t, p), replicas) in &next {
        if replicas.len() > live.len() {
            bail!("{t}-{p} has {} replicas, more than the {} live brokers", replicas.len(), live.len());
        }
        for r in replicas {
            if let Some(n) = held.get_mut(r) {
                *n += 1;
            }
        }
    }
    // Replicas on brokers that are not live go to the live ones holding fewest.
    for replicas in next.values_mut() {
        for i in 0..replicas.len() {
            if !held.contains_key(&replicas[i]) {
                let b = least(&held, replicas);
                *held.get_mut(&b).expect("live") += 1;
                replicas[i] = b;
            }
        }
    }
    // Then, while the brokers holding most and fewest differ by more than one, one replica
    // moves from the first to the second (in the first partition where it can): each step
    // narrows the gap, so this ends, having moved only what evens the counts.
    loop {
        let (&most, &hi) = held.iter().max_by_key(|(b, n)| (**n, -**b)).expect("live brokers");
        let (&fewest, &lo) = held.iter().min_by_key(|(b, n)| (**n, **b)).expect("live brokers");
        if hi <= lo + 1 {
            break;
        }
        let Some(replicas) = next.values_mut().find(|r| r.contains(&most) && !r.contains(&fewest)) else { break };
        let i = replicas.iter().position(|r| *r == most).expect("found above");
        replicas[i] = fewest;
        *held.get_mut(&most).expect("live") -= 1;
        *held.get_mut(&fewest).expect("live") += 1;
    }
    // Preferred leaders the same way: the broker first in most partitions hands one to the
    // broker first in fewest, in a partition where that one is a replica.
    let mut led: BTreeMap<i32, usize> = live.iter().map(|b| (*b, 0)).collect();
    for r in next.values() {
        *led.get_mut(&r[0]).expect("live") += 1;
    }
    loop {
        let (&most, &hi) = led.iter().max_by_key(|(b, n)| (**n, -**b)).expect("live brokers");
        let (&fewest, &lo) = led.iter().min_by_key(|(b, n)| (**n, **b)).expect("live brokers");
        if hi <= lo + 1 {
            break;
        }
        let Some(replicas) = next.values_mut().find(|r| r[0] == most && r.contains(&fewest)) else { break };
        let i = replicas.iter().position(|r| *r == fewest).expect("found above");
        replicas.swap(0, i);
        *led.get_mut(&most).expect("live") -= 1;
        *led.get_mut(&fewest).expect("live") += 1;
    }
    Ok(next
        .into_iter()
        .filter(|(k, to)| layout.get(k) != Some(to))
        .map(|((topic, partition), to)| Move { from: layout[&(topic.clone(), partition)].clone(), topic, partition, to })
        .collect())
}

/// The live broker holding fewest replicas that is not one of `replicas` (lowest id on ties).
fn least(held: &BTreeMap<i32, usize>, replicas: &[i32]) -> i32 {
    *held.iter().filter(|(b, _)| !replicas.contains(b)).min_by_key(|(b, n)| (**n, **b)).map(|(b, _)| b).expect("enough live brokers")
}

/// Every replica on `broker` moved to the live broker holding fewest that is not already a
/// replica of that partition.
pub fn plan_decommission(layout: &Layout, live: &[i32], broker: i32) -> Result<Vec<Move>> {
    let others: Vec<i32> = live.iter().copied().filter(|b| *b != broker).collect();
    let mut held: BTreeMap<i32, usize> = others.iter().map(|b| (*b, 0)).collect();
    for replicas in layout.values() {
        for r in replicas {
            if let Some(n) = held.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut out = Vec::new();
    for ((t, p), replicas) in layout.iter().filter(|(_, r)| r.contains(&broker)) {
        let Some(b) = held.iter().filter(|(b, _)| !replicas.contains(b)).min_by_key(|(b, n)| (**n, **b)).map(|(b, _)| *b) else {
            bail!("{t}-{p} has {} replicas: with broker {broker} gone only {} brokers are live", replicas.len(), others.len());
        };
        *held.get_mut(&b).expect("live") += 1;
        let to = replicas.iter().map(|r| if *r == broker { b } else { *r }).collect();
        out.push(Move { topic: t.clone(), partition: *p, from: replicas.clone(), to });
    }
    Ok(out)
}

#[derive(Serialize)]
struct Report {
    moves: Vec<Move>,
    /// Moves the cluster refused: (topic, partition, error).
    refused: Vec<(String, i32, String)>,
    /// Whether every move finished (with `--wait`).
    finished: bool,
}

fn layout(c: &mut Cluster) -> Result<(Layout, Vec<i32>)> {
    let t = c.topics(None)?;
    let live: Vec<i32> = t.brokers.keys().copied().collect();
    let layout = t
        .topics
        .iter()
        .flat_map(|(name, info)| info.partitions.iter().map(move |p| ((name.clone(), p.partition), p.replicas.clone())))
        .collect();
    Ok((layout, live))
}

/// `spate cluster rebalance`.
pub fn rebalance(c: &mut Cluster, out: &Output, dry_run: bool, wait: bool) -> Result<bool> {
    let (layout, live) = layout(c)?;
    let moves = plan_rebalance(&layout, &live)?;
    carry_out(c, out, moves, dry_run, wait, true)
}

/// `spate cluster decommission N`.
pub fn decommission(c: &mut Cluster, out: &Output, broker: i32, dry_run: bool, wait: bool) -> Result<bool> {
    let (layout, live) = layout(c)?;
    let moves = plan_decommission(&layout, &live, broker)?;
    let ok = carry_out(c, out, moves, dry_run, wait, false)?;
    if ok && wait && !dry_run && !out.json {
        println!("broker {broker} holds no replicas now; it can be stopped and removed");
    }
    Ok(ok)
}

fn carry_out(c: &mut Cluster, out: &Output, moves: Vec<Move>, dry_run: bool, wait: bool, elect: bool) -> Result<bool> {
    let ids = |v: &[i32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    if !out.json {
        if moves.is_empty() {
            println!("nothing to move: the replicas are already spread evenly");
        } else {
            let rows: Vec<Vec<String>> = moves.iter().map(|m| vec![format!("{}-{}", m.topic, m.partition), ids(&m.from), ids(&m.to)]).collect();
            print!("{}", table(&["PARTITION", "REPLICAS NOW", "REPLICAS AFTER"], &rows));
        }
    }
    let mut result = Report { moves: moves.clone(), refused: Vec::new(), finished: moves.is_empty() };
    if dry_run || moves.is_empty() {
        if out.json {
            out.json(&result);
        }
        return Ok(true);
    }
    let asked: Vec<(String, i32, Option<Vec<i32>>)> = moves.iter().map(|m| (m.topic.clone(), m.partition, Some(m.to.clone()))).collect();
    for (t, p, o) in c.reassign(&asked)? {
        if o.error != 0 {
            let msg = format!("{}{}", error_name(o.error), o.message.map(|m| format!(": {m}")).unwrap_or_default());
            report(&format!("moving {t}-{p}: {msg}"));
            result.refused.push((t, p, msg));
        }
    }
    let mut ok = result.refused.is_empty();
    if wait {
        let started = Instant::now();
        let total = moves.len() - result.refused.len();
        let mut last = usize::MAX;
        loop {
            let left = c.reassignments()?.len();
            if left != last && !out.json {
                println!("{:>6.1}s  {} of {total} moves done, {left} copying", started.elapsed().as_secs_f64(), total.saturating_sub(left));
            }
            last = left;
            if left == 0 {
                result.finished = true;
                break;
            }
            if started.elapsed() > WAIT_MAX {
                report("still moving after an hour; the moves go on in the cluster (spate cluster info shows them)");
                ok = false;
                break;
            }
            std::thread::sleep(POLL);
        }
        if elect && result.finished {
            let parts: Vec<(String, i32)> = moves.iter().map(|m| (m.topic.clone(), m.partition)).collect();
            let moved = c.elect_preferred(&parts)?.into_iter().filter(|(_, _, e)| *e == 0).count();
            if !out.json {
                println!("leadership: {moved} partition(s) moved to their preferred replica");
            }
        }
    }
    if out.json {
        out.json(&result);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(parts: &[&[i32]]) -> Layout {
        parts.iter().enumerate().map(|(i, r)| (("t".to_string(), i as i32), r.to_vec())).collect()
    }

    fn apply(l: &Layout, moves: &[Move]) -> Layout {
        let mut l = l.clone();
        for m in moves {
            l.insert((m.topic.clone(), m.partition), m.to.clone());
        }
        l
    }

    fn counts(l: &Layout) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
        let (mut held, mut led) = (BTreeMap::new(), BTreeMap::new());
        for r in l.values() {
            for b in r {
                *held.entry(*b).or_insert(0) += 1;
            }
            *led.entry(r[0]).or_insert(0) += 1;
        }
        (held, led)
    }

    #[test]
    fn a_new_broker_gets_its_share_and_nothing_else_moves_needlessly() {
        // Six RF-2 partitions on brokers 1-3; broker 4 joins empty.
        let l = layout(&[&[1, 2], &[2, 3], &[3, 1], &[1, 2], &[2, 3], &[3, 1]]);
        let moves = plan_rebalance(&l, &[1, 2, 3, 4]).unwrap();
        let after = apply(&l, &moves);
        let (held, led) = counts(&after);
        assert_eq!(held.values().copied().collect::<Vec<_>>(), vec![3, 3, 3, 3], "{after:?}");
        assert!(led.values().all(|n| *n <= 2), "{led:?}");
        assert!(moves.len() <= 4, "only what makes room for broker 4 moves: {moves:?}");
        assert!(plan_rebalance(&after, &[1, 2, 3, 4]).unwrap().is_empty(), "a balanced cluster is left alone");
    }

    #[test]
    fn decommission_moves_every_replica_off_the_broker_or_says_why_it_cannot() {
        let l = layout(&[&[1, 2], &[2, 3], &[3, 1]]);
        let moves = plan_decommission(&l, &[1, 2, 3], 3).unwrap();
        let after = apply(&l, &moves);
        assert!(after.values().all(|r| !r.contains(&3) && r.len() == 2), "{after:?}");
        let e = plan_decommission(&layout(&[&[1, 2, 3]]), &[1, 2, 3], 3).unwrap_err().to_string();
        assert!(e.contains("only 2 brokers are live"), "{e}");
    }
}
