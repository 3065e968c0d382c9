//! `spate bench sweep`: the produce (or e2e) workload once per combination of linger.ms,
//! batch.size, message size, acks and compression, one after the other against the same topic,
//! and the files that show the result in `--out DIR`:
//! - `results.csv`: one row per cell, every knob and every metric (rewritten after each cell, so
//!   an interrupted sweep keeps what it measured);
//! - `report.md`: the exact command, date, host and kernel, a table with the best cell in bold,
//!   and the plots;
//! - SVG plots: throughput and p99 latency against linger.ms (one line per batch.size) and
//!   against batch.size (one line per linger.ms), one set per value of the other knobs.
//!
//! Grid expansion, CSV, markdown and dates are pure functions, unit-tested below.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::plot::{self, Chart, Series};
use super::stats::{format_ms, group_thousands, LatencySummary, Report};
use super::workload::{self, Mode, Settings};
use super::{parse_acks, parse_compression, CommonArgs};
use crate::io::report as files;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepMode {
    /// Produce as fast as possible: throughput and send -> delivery-report latency.
    Produce,
    /// Produce at the fixed --rate while consuming: end-to-end latency.
    E2e,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The workload run in every cell.
    #[arg(long, value_enum, default_value = "produce")]
    pub mode: SweepMode,
    /// linger.ms values, comma-separated.
    #[arg(long = "linger-ms", value_delimiter = ',', default_value = "5", value_name = "MS,..")]
    pub linger_ms: Vec<u64>,
    /// batch.size values in bytes, comma-separated.
    #[arg(long = "batch-size", value_delimiter = ',', default_value = "1000000", value_name = "BYTES,..")]
    pub batch_size: Vec<u64>,
    /// Message payload sizes in bytes, comma-separated.
    #[arg(long = "message-size", value_delimiter = ',', default_value = "1024", value_name = "BYTES,..")]
    pub message_size: Vec<usize>,
    /// acks values (0, 1, all), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all", value_parser = parse_acks, value_name = "ACKS,..", allow_negative_numbers = true)]
    pub acks: Vec<String>,
    /// Compression codecs (none, gzip, snappy, lz4, zstd), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "none", value_parser = parse_compression, value_name = "CODEC,..")]
    pub compression: Vec<String>,
    /// Directory for results.csv, report.md and the SVG plots (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// One combination of knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// 1-based position in the sweep.
    pub index: usize,
    pub linger_ms: u64,
    pub batch_size: u64,
    pub message_size: usize,
    pub acks: String,
    pub compression: String,
}

impl Cell {
    fn describe(&self) -> String {
        format!(
            "linger.ms={} batch.size={} message-size={} acks={} compression={}",
            self.linger_ms, self.batch_size, self.message_size, self.acks, self.compression
        )
    }
}

/// Every combination, the message size, acks and compression outermost and linger.ms innermost,
/// so consecutive cells differ in linger.ms first.
pub fn grid(
    linger_ms: &[u64],
    batch_size: &[u64],
    message_size: &[usize],
    acks: &[String],
    compression: &[String],
) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &m in message_size {
        for a in acks {
            for c in compression {
                for &b in batch_size {
                    for &l in linger_ms {
                        cells.push(Cell {
                            index: cells.len() + 1,
                            linger_ms: l,
                            batch_size: b,
                            message_size: m,
                            acks: a.clone(),
                            compression: c.clone(),
                        });
                    }
                }
            }
        }
    }
    cells
}

/// A cell and what came of it: a report, or the error that stopped it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub cell: Cell,
    pub report: Option<Report>,
    pub error: Option<String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.report.as_ref().is_some_and(Report::ok)
    }

    /// Producer throughput, msg/s.
    fn throughput(&self) -> Option<f64> {
        self.report.as_ref()?.produced.as_ref().map(|s| s.msg_per_s)
    }

    fn produce_mb_per_s(&self) -> Option<f64> {
        self.report.as_ref()?.produced.as_ref().map(|s| s.mb_per_s)
    }

    /// The latency a sweep in `mode` is about: delivery (produce) or end-to-end (e2e).
    fn latency(&self, mode: SweepMode) -> Option<&LatencySummary> {
        let r = self.report.as_ref()?;
        let side = if mode == SweepMode::E2e { r.consumed.as_ref() } else { r.produced.as_ref() };
        side?.latency.as_ref()
    }
}

/// The best cell among those without errors: highest throughput (produce), or lowest p99
/// end-to-end latency (e2e, where the rate is fixed).
pub fn best(outcomes: &[Outcome], mode: SweepMode) -> Option<usize> {
    let candidates = outcomes.iter().enumerate().filter(|(_, o)| o.ok());
    match mode {
        SweepMode::Produce => candidates
            .filter_map(|(i, o)| Some((i, o.throughput()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i),
        SweepMode::E2e => candidates
            .filter_map(|(i, o)| Some((i, o.latency(mode)?.p99_ms)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i),
    }
}

const CSV_HEADER: &[&str] = &[
    "cell",
    "mode",
    "linger_ms",
    "batch_size",
    "message_size",
    "acks",
    "compression",
    "partitions",
    "producers",
    "consumers",
    "rate",
    "duration_s",
    "messages",
    "errors",
    "missing",
    "msg_per_s",
    "mb_per_s",
    "delivery_p50_ms",
    "delivery_p90_ms",
    "delivery_p99_ms",
    "delivery_p999_ms",
    "delivery_max_ms",
    "consumed_messages",
    "consumed_msg_per_s",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "e2e_p999_ms",
    "e2e_max_ms",
    "error",
];

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn latency_fields(l: Option<&LatencySummary>) -> Vec<String> {
    match l {
        Some(l) => [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms].iter().map(|v| format!("{v:.3}")).collect(),
        None => vec![String::new(); 5],
    }
}

/// results.csv: a header, then one row per cell. Empty fields where a metric does not apply.
pub fn csv(mode: SweepMode, outcomes: &[Outcome]) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push('\n');
    for o in outcomes {
        let c = &o.cell;
        let r = o.report.as_ref();
        let s = r.map(|r| &r.settings);
        let produced = r.and_then(|r| r.produced.as_ref());
        let consumed = r.and_then(|r| r.consumed.as_ref());
        let opt = |v: Option<String>| v.unwrap_or_default();
        let mut row = vec![
            c.index.to_string(),
            mode_name(mode).to_string(),
            c.linger_ms.to_string(),
            c.batch_size.to_string(),
            c.message_size.to_string(),
            c.acks.clone(),
            c.compression.clone(),
            opt(r.map(|r| r.topic_partitions.to_string())),
            opt(s.map(|s| s.producers.to_string())),
            opt(s.map(|s| if mode == SweepMode::E2e { s.consumers } else { 0 }.to_string())),
            opt(s.map(|s| s.rate.to_string())),
            opt(s.and_then(|s| s.duration_s).map(|d| d.to_string())),
            opt(produced.map(|p| p.messages.to_string())),
            opt(r.map(|r| r.errors.to_string())),
            opt(r.and_then(|r| r.missing).map(|m| m.to_string())),
            opt(produced.map(|p| format!("{:.1}", p.msg_per_s))),
            opt(produced.map(|p| format!("{:.3}", p.mb_per_s))),
        ];
        row.extend(latency_fields(produced.and_then(|p| p.latency.as_ref())));
        row.push(opt(consumed.map(|c| c.messages.to_string())));
        row.push(opt(consumed.map(|c| format!("{:.1}", c.msg_per_s))));
        row.extend(latency_fields(consumed.and_then(|c| c.latency.as_ref())));
        row.push(o.error.clone().or_else(|| r.and_then(|r| r.error_samples.first().cloned())).unwrap_or_default());
        out.push_str(&row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

fn mode_name(mode: SweepMode) -> &'static str {
    match mode {
        SweepMode::Produce => "produce",
        SweepMode::E2e => "e2e",
    }
}

fn latency_name(mode: SweepMode) -> &'static str {
    match mode {
        SweepMode::Produce => "send -> delivery report",
        SweepMode::E2e => "end-to-end (send time in the record -> consumer)",
    }
}

/// The results as a markdown table, the best cell's row in bold.
pub fn markdown_table(mode: SweepMode, outcomes: &[Outcome], best: Option<usize>) -> String {
    let mut out = String::from(
        "| cell | linger.ms | batch.size | message B | acks | compression | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n\
         |---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, o) in outcomes.iter().enumerate() {
        let c = &o.cell;
        let l = o.latency(mode);
        let ms = |f: fn(&LatencySummary) -> f64| l.map_or("-".to_string(), |l| format_ms(f(l)));
        let errors = match (&o.report, &o.error) {
            (Some(r), _) => {
                let mut e = group_thousands(r.errors);
                if let Some(m) = r.missing.filter(|m| *m > 0) {
                    e.push_str(&format!(" ({m} missing)"));
                }
                e
            }
            (None, Some(e)) => format!("failed: {}", e.replace('|', "\\|")),
            (None, None) => "-".to_string(),
        };
        let cells = [
            c.index.to_string(),
            c.linger_ms.to_string(),
            c.batch_size.to_string(),
            c.message_size.to_string(),
            c.acks.clone(),
            c.compression.clone(),
            o.throughput().map_or("-".into(), |t| group_thousands(t.round() as u64)),
            o.produce_mb_per_s().map_or("-".into(), |m| format!("{m:.2}")),
            ms(|l| l.p50_ms),
            ms(|l| l.p99_ms),
            ms(|l| l.p999_ms),
            ms(|l| l.max_ms),
            errors,
        ];
        let bold = best == Some(i);
        let cells: Vec<String> = cells.into_iter().map(|s| if bold { format!("**{s}**") } else { s }).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// `seconds` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The command line as a shell would take it back: arguments with special characters quoted.
pub fn shell_line(args: &[String]) -> String {
    let quote = |a: &String| {
        let plain = !a.is_empty()
            && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// One plot file: its name and chart.
pub struct PlotFile {
    pub name: String,
    pub chart: Chart,
}

/// The plots: for each value of the other knobs (message size, acks, compression), throughput and
/// p99 latency against linger.ms (a line per batch.size) and against batch.size (a line per
/// linger.ms). Knobs with a single value in the sweep are left out of file names. Cells that
/// failed are left out of the lines.
pub fn plots(mode: SweepMode, outcomes: &[Outcome]) -> Vec<PlotFile> {
    let distinct = |f: &dyn Fn(&Cell) -> String| {
        let mut v: Vec<String> = outcomes.iter().map(|o| f(&o.cell)).collect();
        v.dedup();
        v.sort();
        v.dedup();
        v.len()
    };
    let vary_size = distinct(&|c| c.message_size.to_string()) > 1;
    let vary_acks = distinct(&|c| c.acks.clone()) > 1;
    let vary_codec = distinct(&|c| c.compression.clone()) > 1;
    let mut groups: Vec<(usize, String, String)> = Vec::new(); // (message size, acks, compression)
    for o in outcomes {
        let key = (o.cell.message_size, o.cell.acks.clone(), o.cell.compression.clone());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let lat = latency_name(mode);
    let mut files = Vec::new();
    for (size, acks, codec) in groups {
        let mut suffix = String::new();
        if vary_size {
            suffix.push_str(&format!("-size{size}"));
        }
        if vary_acks {
            suffix.push_str(&format!("-acks{acks}"));
        }
        if vary_codec {
            suffix.push_str(&format!("-{codec}"));
        }
        let context = format!("{size} B messages, acks={acks}, compression {codec}");
        let members: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.cell.message_size == size && o.cell.acks == acks && o.cell.compression == codec)
            .collect();
        type Metric = fn(&Outcome, SweepMode) -> Option<f64>;
        let metrics: [(&str, &str, String, Metric); 2] = [
            ("throughput", "Throughput", "throughput (msg/s)".to_string(), |o, _| o.throughput()),
            ("p99", "p99 latency", format!("p99 latency, {lat} (ms)"), |o, m| o.latency(m).map(|l| l.p99_ms)),
        ];
        for (file, title, y_label, metric) in metrics {
            for by_linger in [true, false] {
                let (x_name, x_label, line_name) = if by_linger {
                    ("linger", "linger.ms (ms)", "batch.size")
                } else {
                    ("batch", "batch.size (bytes, log scale)", "linger.ms")
                };
                let mut lines: Vec<(u64, Vec<(f64, f64)>)> = Vec::new();
                for o in &members {
                    let (line, x) = if by_linger {
                        (o.cell.batch_size, o.cell.linger_ms as f64)
                    } else {
                        (o.cell.linger_ms, o.cell.batch_size as f64)
                    };
                    let Some(y) = metric(o, mode).filter(|_| o.report.is_some()) else { continue };
                    match lines.iter_mut().find(|(l, _)| *l == line) {
                        Some((_, pts)) => pts.push((x, y)),
                        None => lines.push((line, vec![(x, y)])),
                    }
                }
                lines.sort_by_key(|(l, _)| *l);
                let series = lines
                    .into_iter()
                    .map(|(l, mut pts)| {
                        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                        Series { name: format!("{line_name} {l}"), points: pts }
                    })
                    .collect();
                files.push(PlotFile {
                    name: format!("{file}-vs-{x_name}{suffix}.svg"),
                    chart: Chart {
                        title: format!("{title} vs {} ({context})", x_label.split(' ').next().unwrap_or(x_label)),
                        x_label: x_label.to_string(),
                        y_label: y_label.clone(),
                        x_log: !by_linger,
                        series,
                    },
                });
            }
        }
    }
    files
}

/// What report.md says about where and how the sweep ran.
pub struct RunInfo<'a> {
    pub command: String,
    pub date: String,
    pub host: files::Host,
    pub cpus: usize,
    pub settings: &'a Settings,
    pub partitions: Option<i32>,
    pub librdkafka: String,
}

/// report.md.
pub fn markdown(mode: SweepMode, ctx: &RunInfo<'_>, outcomes: &[Outcome], plots: &[PlotFile]) -> String {
    let s = ctx.settings;
    let best = best(outcomes, mode);
    let mut out = format!("# spate bench sweep ({})\n\n", mode_name(mode));
    out.push_str(&format!("- Command: `{}`\n", ctx.command));
    out.push_str(&format!("- Date: {}\n", ctx.date));
    out.push_str(&format!("- Host: {} ({} CPUs), kernel {}\n", ctx.host.name, ctx.cpus, ctx.host.kernel));
    out.push_str(&format!(
        "- Broker: {}, topic `{}`{}\n",
        s.bootstrap,
        s.topic,
        ctx.partitions.map_or(String::new(), |p| format!(" ({p} partition{})", if p == 1 { "" } else { "s" }))
    ));
    out.push_str(&format!("- Client: librdkafka {}{}\n", ctx.librdkafka, properties_note(s)));
    let length = match (s.messages, s.duration_s) {
        (Some(n), _) => format!("{n} messages"),
        (None, Some(d)) => format!("{d} s"),
        (None, None) => "-".to_string(),
    };
    out.push_str(&format!(
        "- Each cell: {length} after a {} s warm-up; {} producer{}{}, rate {}\n",
        s.warmup_s,
        s.producers,
        if s.producers == 1 { "" } else { "s" },
        if mode == SweepMode::E2e {
            format!(", {} consumer{}", s.consumers, if s.consumers == 1 { "" } else { "s" })
        } else {
            String::new()
        },
        if s.rate == 0 { "unlimited".to_string() } else { format!("{} msg/s", s.rate) },
    ));
    out.push_str(&format!(
        "- Latency: {} (HdrHistogram, ms); throughput: delivered messages per second, payload MB = 10^6 bytes\n\n",
        latency_name(mode)
    ));
    out.push_str("## Results\n\n");
    out.push_str(&markdown_table(mode, outcomes, best));
    out.push('\n');
    match best {
        Some(i) => {
            let o = &outcomes[i];
            let why = match mode {
                SweepMode::Produce => "highest throughput without errors",
                SweepMode::E2e => "lowest p99 end-to-end latency without errors",
            };
            out.push_str(&format!(
                "Best ({why}, in bold): cell {}, {}: {} msg/s, p99 {} ms.\n\n",
                o.cell.index,
                o.cell.describe(),
                group_thousands(o.throughput().unwrap_or(0.0).round() as u64),
                o.latency(mode).map_or("-".to_string(), |l| format_ms(l.p99_ms)),
            ));
        }
        None => out.push_str("No cell ran without errors.\n\n"),
    }
    if !plots.is_empty() {
        out.push_str("## Plots\n\n");
        for p in plots {
            out.push_str(&format!("![{}]({})\n\n", p.chart.title, p.name));
        }
    }
    out
}

fn properties_note(s: &Settings) -> String {
    if s.properties.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = s.properties.iter().map(|p| format!("{}={}", p.key, p.value)).collect();
        format!(", with {}", p.join(" "))
    }
}

/// Runs `spate bench sweep`: every cell, then the files. Ok(false) when any cell failed.
pub fn run(a: &SweepArgs) -> Result<ExitCode> {
    let mode = match a.mode {
        SweepMode::Produce => Mode::Produce,
        SweepMode::E2e => Mode::E2e,
    };
    if a.mode == SweepMode::E2e && a.common.rate == 0 {
        bail!("--mode e2e needs a fixed --rate: at an unlimited rate the latency measures queueing, not the knobs");
    }
    let cells = grid(&a.linger_ms, &a.batch_size, &a.message_size, &a.acks, &a.compression);
    if cells.is_empty() {
        bail!("the sweep has no cells");
    }
    files::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let base = a.common.settings(mode, &super::Knobs::default());
    let started = std::time::SystemTime::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let n = cells.len();
    for cell in cells {
        eprintln!("cell {}/{n}: {}", cell.index, cell.describe());
        let s = Settings {
            linger_ms: cell.linger_ms,
            batch_size: cell.batch_size,
            message_size: cell.message_size,
            acks: cell.acks.clone(),
            compression: cell.compression.clone(),
            ..base.clone()
        };
        let outcome = match workload::run(mode, &s) {
            Ok(r) => Outcome { cell, report: Some(r), error: None },
            Err(e) => Outcome { cell, report: None, error: Some(format!("{e:#}")) },
        };
        eprintln!("cell {}/{n}: {}", outcome.cell.index, summary(&outcome, a.mode));
        outcomes.push(outcome);
        files::write(&a.out, "results.csv", csv(a.mode, &outcomes).as_bytes())
            .with_context(|| format!("writing {}", a.out.join("results.csv").display()))?;
    }

    let plots = plots(a.mode, &outcomes);
    for p in &plots {
        let svg = plot::svg(&p.chart).with_context(|| format!("drawing {}", p.name))?;
        files::write(&a.out, &p.name, svg.as_bytes()).with_context(|| format!("writing {}", p.name))?;
    }
    let ctx = RunInfo {
        command: shell_line(&std::env::args().collect::<Vec<_>>()),
        date: utc_date(started.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())),
        host: files::host(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        settings: &base,
        partitions: outcomes.iter().find_map(|o| o.report.as_ref().map(|r| r.topic_partitions)),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
    };
    files::write(&a.out, "report.md", markdown(a.mode, &ctx, &outcomes, &plots).as_bytes())
        .with_context(|| format!("writing {}", a.out.join("report.md").display()))?;

    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&outcomes).expect("plain data serializes"));
    } else {
        print!("{}", markdown_table(a.mode, &outcomes, best(&outcomes, a.mode)));
        println!("\nwrote {}/results.csv, report.md and {} plots", a.out.display(), plots.len());
    }
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    if failed > 0 {
        super::report_error(&format!("{failed} of {n} cells had errors (see report.md)"));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(o: &Outcome, mode: SweepMode) -> String {
    match (&o.report, &o.error) {
        (Some(r), _) => format!(
            "{} msg/s, p99 {} ms, {} errors",
            group_thousands(o.throughput().unwrap_or(0.0).round() as u64),
            o.latency(mode).map_or("-".to_string(), |l| format_ms(l.p99_ms)),
            r.errors
        ),
        (None, Some(e)) => format!("failed: {e}"),
        (None, None) => "no result".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::{Latencies, Side, DELIVERY_LATENCY};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn settings() -> Settings {
        Settings {
            bootstrap: "127.0.0.1:9092".into(),
            topic: "t".into(),
            partitions: 1,
            replication_factor: -1,
            message_size: 100,
            producers: 1,
            consumers: 1,
            rate: 0,
            acks: "all".into(),
            compression: "none".into(),
            linger_ms: 5,
            batch_size: 16384,
            duration_s: Some(1.0),
            messages: None,
            warmup_s: 0.0,
            properties: vec![],
            transaction_records: None,
        }
    }

    /// An outcome with `msg_per_s` throughput and latencies of `p99_us` µs.
    fn outcome(cell: Cell, msg_per_s: u64, p99_us: u64, errors: u64) -> Outcome {
        let mut l = Latencies::new();
        for _ in 0..100 {
            l.record_us(p99_us);
        }
        let report = Report {
            mode: "produce",
            settings: settings(),
            librdkafka: "2.12.1".into(),
            topic_partitions: 1,
            produced: Some(Side::new(msg_per_s, msg_per_s * 100, 1.0, Some(DELIVERY_LATENCY), &l)),
            consumed: None,
            errors,
            error_samples: if errors > 0 { vec!["delivery failed: boom, \"bad\"".into()] } else { vec![] },
            missing: None,
        };
        Outcome { cell, report: Some(report), error: None }
    }

    #[test]
    fn grid_expands_every_combination_linger_innermost() {
        let g = grid(&[0, 5, 20], &[16384, 131072], &[100], &strings(&["1", "all"]), &strings(&["none"]));
        assert_eq!(g.len(), 12);
        assert_eq!(g.iter().map(|c| c.index).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
        assert_eq!((g[0].linger_ms, g[0].batch_size, g[0].acks.as_str()), (0, 16384, "1"));
        assert_eq!((g[1].linger_ms, g[1].batch_size), (5, 16384));
        assert_eq!((g[3].linger_ms, g[3].batch_size), (0, 131072));
        assert_eq!((g[6].linger_ms, g[6].batch_size, g[6].acks.as_str()), (0, 16384, "all"));
        assert!(grid(&[], &[1], &[1], &strings(&["1"]), &strings(&["none"])).is_empty());
    }

    #[test]
    fn csv_has_a_row_per_cell_and_quotes_what_needs_it() {
        let g = grid(&[0, 5], &[16384], &[100], &strings(&["all"]), &strings(&["none"]));
        let mut outcomes = vec![outcome(g[0].clone(), 1000, 2000, 0), outcome(g[1].clone(), 3000, 1000, 2)];
        outcomes.push(Outcome { cell: g[1].clone(), report: None, error: Some("no broker".into()) });
        let text = csv(SweepMode::Produce, &outcomes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].split(',').count(), CSV_HEADER.len());
        assert!(lines[1].starts_with("1,produce,0,16384,100,all,none,1,1,0,0,1,1000,0,,1000.0,0.100,2.000,"), "{}", lines[1]);
        assert!(lines[2].ends_with(",\"delivery failed: boom, \"\"bad\"\"\""), "{}", lines[2]);
        assert!(lines[3].starts_with("2,produce,5,16384,") && lines[3].ends_with(",no broker"), "{}", lines[3]);
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
    }

    #[test]
    fn best_cell_is_fastest_without_errors_and_bold() {
        let g = grid(&[0, 5, 20], &[16384], &[100], &strings(&["all"]), &strings(&["none"]));
        let outcomes = vec![
            outcome(g[0].clone(), 1000, 1500, 0),
            outcome(g[1].clone(), 5000, 1200, 1), // fastest, but failed
            outcome(g[2].clone(), 3000, 1000, 0),
        ];
        assert_eq!(best(&outcomes, SweepMode::Produce), Some(2));
        let table = markdown_table(SweepMode::Produce, &outcomes, Some(2));
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[2], "| 1 | 0 | 16384 | 100 | all | none | 1,000 | 0.10 | 1.500 | 1.500 | 1.500 | 1.500 | 0 |");
        assert!(rows[4].starts_with("| **3** | **20** |"), "{}", rows[4]);
        assert!(!rows[3].contains("**"));
        assert_eq!(best(&[], SweepMode::Produce), None);
    }

    #[test]
    fn report_names_command_host_and_plots() {
        let g = grid(&[0, 5], &[16384, 131072], &[100], &strings(&["all"]), &strings(&["none"]));
        let outcomes: Vec<Outcome> = g.iter().map(|c| outcome(c.clone(), 1000 * c.index as u64, 1000, 0)).collect();
        let plots = plots(SweepMode::Produce, &outcomes);
        let names: Vec<&str> = plots.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["throughput-vs-linger.svg", "throughput-vs-batch.svg", "p99-vs-linger.svg", "p99-vs-batch.svg"]);
        assert_eq!(plots[0].chart.series.len(), 2); // a line per batch.size
        assert_eq!(plots[0].chart.series[1].points, vec![(0.0, 3000.0), (5.0, 4000.0)]);
        assert_eq!(plots[1].chart.series[0].name, "linger.ms 0");
        let s = settings();
        let ctx = RunInfo {
            command: shell_line(&strings(&["spate", "bench", "sweep", "-X", "a=b c"])),
            date: utc_date(0),
            host: files::Host { name: "box".into(), kernel: "Linux 6.1".into() },
            cpus: 2,
            settings: &s,
            partitions: Some(1),
            librdkafka: "2.12.1".into(),
        };
        let md = markdown(SweepMode::Produce, &ctx, &outcomes, &plots);
        assert!(md.contains("`spate bench sweep -X 'a=b c'`"), "{md}");
        assert!(md.contains("1970-01-01 00:00:00 UTC"));
        assert!(md.contains("box (2 CPUs), kernel Linux 6.1"));
        assert!(md.contains("Best (highest throughput without errors, in bold): cell 4"), "{md}");
        assert!(md.contains("(p99-vs-batch.svg)"));
    }

    #[test]
    fn extra_knobs_get_their_own_plots() {
        let g = grid(&[0], &[16384], &[100, 1000], &strings(&["all"]), &strings(&["none", "lz4"]));
        let outcomes: Vec<Outcome> = g.iter().map(|c| outcome(c.clone(), 1000, 1000, 0)).collect();
        let plots = plots(SweepMode::Produce, &outcomes);
        assert_eq!(plots.len(), 16);
        assert!(plots.iter().any(|p| p.name == "p99-vs-batch-size1000-lz4.svg"));
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn shell_lines_quote_what_needs_quoting() {
        assert_eq!(shell_line(&strings(&["a", "b=c,d", "x y", "it's", ""])), r"a b=c,d 'x y' 'it'\''s' ''");
    }
}
