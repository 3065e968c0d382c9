//! The `spate` command line: `spate serve` runs the broker; `spate group ...`, `spate topic ...`,
//! `spate produce`, `spate consume` and `spate cluster info` are clients for any Kafka-compatible
//! broker (see [`crate::admin`]); `spate bench ...` measures any Kafka-compatible broker (see
//! [`crate::bench`]); `spate config print-defaults` prints every setting of `spate serve` (see
//! [`crate::config::SETTINGS`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ServeArgs};

#[derive(Debug, Parser)]
#[command(name = "spate", version, about = "A Kafka-compatible, thread-per-core event-streaming broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (defaults: 127.0.0.1:9092, ./spate-data, all cores).
    Serve(ServeArgs),
    /// Consumer groups on any Kafka-compatible broker: list, describe, delete, reset-offsets.
    Group(crate::admin::GroupArgs),
    /// Topics on any Kafka-compatible broker: create, list, describe, alter-config,
    /// add-partitions, delete, trim-prefix.
    Topic(crate::admin::topic::TopicArgs),
    /// Write records read from stdin (or --file), one per line, to a topic.
    Produce(crate::admin::produce::ProduceArgs),
    /// Print a topic's records, one per line; stop at the end, or --follow.
    Consume(crate::admin::consume::ConsumeArgs),
    /// The cluster: brokers, controller, topics, API versions.
    Cluster(crate::admin::ClusterArgs),
    /// Transactions on any Kafka-compatible broker: list, describe.
    Txn(crate::admin::txn::TxnArgs),
    /// SCRAM users (SASL credentials) on any Kafka-compatible broker: create, list, delete.
    User(crate::admin::user::UserArgs),
    /// ACLs on any Kafka-compatible broker: create, list, delete.
    Acl(crate::admin::acl::AclArgs),
    /// Client quotas on any Kafka-compatible broker: set, list, remove.
    Quota(crate::admin::quota::QuotaArgs),
    /// Benchmarks against any Kafka-compatible broker: produce, consume, e2e, sweep.
    Bench(crate::bench::BenchArgs),
    /// The settings of `spate serve`.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every setting of `spate serve` with its flag, variable, default, unit and meaning.
    PrintDefaults {
        /// text: for reading; toml: a commented file `spate serve --config` accepts; markdown:
        /// the README's configuration table.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Same as `--format markdown` (regenerates the README's configuration table).
        #[arg(long, conflicts_with = "format")]
        markdown: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Toml,
    Markdown,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Group(args) => crate::admin::run(args),
        Command::Topic(args) => crate::admin::topic::run(args),
        Command::Produce(args) => crate::admin::produce::run(args),
        Command::Consume(args) => crate::admin::consume::run(args),
        Command::Cluster(args) => crate::admin::run_cluster(args),
        Command::Txn(args) => crate::admin::txn::run(args),
        Command::User(args) => crate::admin::user::run(args),
        Command::Acl(args) => crate::admin::acl::run(args),
        Command::Quota(args) => crate::admin::quota::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Config(ConfigCommand::PrintDefaults { format, markdown }) => {
            let text = match (format, markdown) {
                (_, true) | (Format::Markdown, _) => crate::config::render_markdown(),
                (Format::Toml, false) => crate::config::render_toml(),
                (Format::Text, false) => crate::config::render_text(),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            init_logging();
            let result = Config::from_args(&args).and_then(crate::server::serve);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("spate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` sets levels (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
