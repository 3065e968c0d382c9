//! Spate: a Kafka-compatible, thread-per-core event-streaming broker.
//!
//! Code map (the long version, with invariants, is `ARCHITECTURE.md`):
//! - [`config`]: every setting and limit, its default and unit; file, env and flag layering.
//! - [`io`]: the runtime edge. The only module that names glommio, opens files or sockets, or
//!   handles signals. In tests, `io::sim_disk` is its fault-injecting twin for storage.
//! - [`protocol`]: Kafka wire framing, record-batch parsing and error codes. Knows nothing of the
//!   server or storage.
//! - [`coordinator`]: consumer-group state machines, pure (no I/O), driven by `server::groups`.
//! - [`controller`]: the metadata quorum (openraft on a `controller` thread of its own): the
//!   cluster's metadata log, its state machine, formation and the cluster id, and the broker
//!   lifecycle (registration, heartbeats, fencing, controlled shutdown).
//! - [`storage`]: a partition's log: segments, indexes, recovery, group commit. Uses `io` for files.
//! - [`sync`]: core-local task coordination (`Notify`, first-come `Turns`); names no runtime.
//! - [`server`]: shards (one per core), the shard table, cross-core routing, connections, and one
//!   handler file per Kafka API.
//! - [`admin`]: the client commands (`spate group ...`, `spate topic ...`, produce, consume,
//!   cluster info) over the Kafka protocol (a blocking client in `io::client`, librdkafka for
//!   produce and consume); they work against any Kafka-compatible broker.
//! - [`metrics`]: Prometheus metrics and the admin HTTP endpoints (`/metrics`, `/v1/...`).
//! - [`bench`]: `spate bench ...`, produce/consume/end-to-end benchmarks and linger/batch sweeps
//!   through librdkafka; works against any Kafka-compatible broker.
//! - [`cli`]: the `spate` command line.
//! - `fuzzing` (hidden): entry points for the fuzz targets in `fuzz/` and `tests/fuzz_corpus.rs`.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod controller;
pub mod coordinator;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod storage;
pub mod sync;
