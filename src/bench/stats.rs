//! What one benchmark run measured: latency histograms (HdrHistogram, in microseconds) and their
//! percentiles, throughput per side (produced, consumed), and the report printed at the end as a
//! table or as JSON. Pure: no clients, no clock.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::Settings;

/// Largest latency a histogram holds, µs (one hour); larger values are recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits a histogram keeps: 3 means every value within 0.1%.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram, values in microseconds. Owned by one thread at a time (behind a mutex
/// where a client's callback thread records and the progress line reads).
#[derive(Clone)]
pub struct Latencies {
    h: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        let h = Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Latencies { h }
    }

    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.min(LATENCY_MAX_US));
    }

    pub fn add(&mut self, other: &Latencies) {
        self.h.add(&other.h).expect("histograms with the same bounds add");
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at percentile `p` (0-100), ms; `None` when nothing was recorded.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        (self.count() > 0).then(|| us_to_ms(self.h.value_at_percentile(p)))
    }

    /// p50, p90, p99, p99.9 and max, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.count() == 0 {
            return None;
        }
        Some(LatencySummary {
            count: self.count(),
            p50_ms: us_to_ms(self.h.value_at_percentile(50.0)),
            p90_ms: us_to_ms(self.h.value_at_percentile(90.0)),
            p99_ms: us_to_ms(self.h.value_at_percentile(99.0)),
            p999_ms: us_to_ms(self.h.value_at_percentile(99.9)),
            max_ms: us_to_ms(self.h.max()),
            mean_ms: self.h.mean() / 1000.0,
        })
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency percentiles of one run, milliseconds. HdrHistogram reports the highest value of the
/// bucket a percentile falls in, so each is within 0.1% above the true value, and
/// p50 <= p90 <= p99 <= p99.9 <= max always holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// What the latency of a side measures.
pub const DELIVERY_LATENCY: &str = "send -> delivery report";
pub const E2E_LATENCY: &str = "end-to-end: send time in the record -> consumer";

/// One side of a run (what the producers sent, or what the consumers read) over the measured
/// window: after the warm-up, until the last measured message was acknowledged or read.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Messages measured (delivered, or read).
    pub messages: u64,
    /// Their payload bytes (keys, headers and protocol overhead not counted).
    pub bytes: u64,
    /// The measured window, seconds.
    pub seconds: f64,
    pub msg_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// What `latency` measures, when there is one.
    pub latency_kind: Option<&'static str>,
    pub latency: Option<LatencySummary>,
}

impl Side {
    pub fn new(messages: u64, bytes: u64, seconds: f64, latency_kind: Option<&'static str>, latency: &Latencies) -> Side {
        let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
        Side {
            messages,
            bytes,
            seconds,
            msg_per_s: per_s(messages as f64),
            mb_per_s: per_s(bytes as f64 / 1e6),
            latency_kind: latency_kind.filter(|_| latency.count() > 0),
            latency: latency.summary(),
        }
    }
}

/// The whole result of `spate bench produce|consume|e2e`, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub mode: &'static str,
    pub settings: Settings,
    /// The librdkafka version the clients ran.
    pub librdkafka: String,
    /// The topic's partition count as found (or created).
    pub topic_partitions: i32,
    pub produced: Option<Side>,
    pub consumed: Option<Side>,
    /// Messages that failed: delivery reports with an error, plus sends librdkafka refused.
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// e2e only: messages delivered during the run that no consumer saw before the drain timeout.
    pub missing: Option<u64>,
}

impl Report {
    /// False when any message failed or went missing: the exit code is then 1.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.missing.unwrap_or(0) == 0
    }

    /// The human-readable report: one line of settings, a table, notes.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "spate bench {}: {}, topic {} ({} partition{})",
            self.mode,
            s.bootstrap,
            s.topic,
            self.topic_partitions,
            plural(self.topic_partitions as u64)
        );
        if self.produced.is_some() {
            out.push_str(&format!(
                ", {} B messages, acks={}, compression {}, linger.ms {}, batch.size {}, {} producer{}, rate {}",
                s.message_size,
                s.acks,
                s.compression,
                s.linger_ms,
                s.batch_size,
                s.producers,
                plural(s.producers as u64),
                if s.rate == 0 { "unlimited".to_string() } else { format!("{} msg/s", s.rate) },
            ));
        }
        if self.consumed.is_some() {
            out.push_str(&format!(", {} consumer{}", s.consumers, plural(s.consumers as u64)));
        }
        out.push_str(&format!("; librdkafka {}\n\n", self.librdkafka));
        let header =
            ["", "MESSAGES", "SECONDS", "MSG/S", "MB/S", "P50 ms", "P90 ms", "P99 ms", "P99.9 ms", "MAX ms"];
        let mut rows = Vec::new();
        let mut kinds = Vec::new();
        for (name, side) in [("produced", &self.produced), ("consumed", &self.consumed)] {
            let Some(side) = side else { continue };
            let l = side.latency.as_ref();
            let ms = |f: fn(&LatencySummary) -> f64| l.map_or("-".to_string(), |l| format_ms(f(l)));
            rows.push(vec![
                name.to_string(),
                group_thousands(side.messages),
                format!("{:.2}", side.seconds),
                group_thousands(side.msg_per_s.round() as u64),
                format!("{:.2}", side.mb_per_s),
                ms(|l| l.p50_ms),
                ms(|l| l.p90_ms),
                ms(|l| l.p99_ms),
                ms(|l| l.p999_ms),
                ms(|l| l.max_ms),
            ]);
            if let Some(k) = side.latency_kind {
                kinds.push(format!("{name}: {k}"));
            }
        }
        out.push_str(&crate::admin::table(&header, &rows));
        out.push('\n');
        if !kinds.is_empty() {
            out.push_str(&format!("latency: {}\n", kinds.join("; ")));
        }
        if self.produced.is_some() {
            out.push_str(&format!("delivery errors: {}\n", group_thousands(self.errors)));
        }
        for e in &self.error_samples {
            out.push_str(&format!("  {e}\n"));
        }
        if let Some(m) = self.missing {
            out.push_str(&format!("delivered but not consumed: {}\n", group_thousands(m)));
        }
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Milliseconds with three significant decimals where it matters: `0.123`, `4.21`, `1234`.
pub fn format_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        for us in 1..=1000 {
            l.record_us(us * 10); // 10 µs .. 10 ms, uniform
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 1000);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(near(s.p50_ms, 5.0), "{s:?}");
        assert!(near(s.p90_ms, 9.0), "{s:?}");
        assert!(near(s.p99_ms, 9.9), "{s:?}");
        assert!(near(s.p999_ms, 9.99), "{s:?}");
        assert!(near(s.max_ms, 10.0), "{s:?}");
        assert!(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.p999_ms && s.p999_ms <= s.max_ms);
    }

    #[test]
    fn empty_histograms_have_no_percentiles() {
        let l = Latencies::new();
        assert_eq!(l.summary(), None);
        assert_eq!(l.percentile_ms(99.0), None);
        let side = Side::new(0, 0, 0.0, Some(DELIVERY_LATENCY), &l);
        assert_eq!(side.msg_per_s, 0.0);
        assert_eq!(side.latency_kind, None);
    }

    #[test]
    fn histograms_add_and_clamp() {
        let mut a = Latencies::new();
        a.record_us(0);
        a.record_us(u64::MAX);
        let mut b = Latencies::new();
        b.record_us(2_000);
        a.add(&b);
        assert_eq!(a.count(), 3);
        assert!(a.summary().unwrap().max_ms >= LATENCY_MAX_US as f64 / 1000.0);
        assert_eq!(a.percentile_ms(0.0), Some(0.0));
    }

    #[test]
    fn throughput_is_per_second_of_the_window() {
        let side = Side::new(2_000, 2_000_000, 0.5, None, &Latencies::new());
        assert_eq!(side.msg_per_s, 4_000.0);
        assert_eq!(side.mb_per_s, 4.0);
    }

    #[test]
    fn numbers_format_for_people() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(format_ms(0.1234), "0.123");
        assert_eq!(format_ms(42.123), "42.12");
        assert_eq!(format_ms(123.45), "123.5");
        assert_eq!(format_ms(12345.6), "12346");
    }
}
