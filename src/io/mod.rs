//! The runtime edge: executors, tasks, timers, cross-core channels, sockets and files.
//!
//! Architecture invariant: this is the only module that names `glommio`, opens a socket or a file,
//! or handles signals ([`signal`]).
//! Everything above it sees small types of ours ([`net::Listener`], [`file::SegmentFile`],
//! [`mesh::Mesh`]) so that the network path, or the whole runtime, can be swapped here alone.
//! glommio is unmaintained upstream; see DESIGN.md for why the swap is expected.
//!
//! [`client`] is the exception to "runtime": a blocking std-socket Kafka client for the `spate
//! group` command line, which runs no executor. [`report`] is another: plain blocking writes of
//! the report files `spate bench sweep` produces, and the host's name and kernel. [`http`] is the
//! admin HTTP listener, a plain thread beside the executors.
//!
//! [`controller_net`] and [`metadata_store`] are the metadata quorum's edge: the `controller`
//! thread's tokio runtime and its RPC sockets, and its files under `<data_dir>/metadata/`.
//!
//! `sim_disk` (tests only) stands in for [`file`] and [`fs`] when a test installs it: an
//! in-memory disk with a volatile write cache that injects faults from one seed.

pub mod client;
pub mod controller_net;
pub mod file;
pub mod fs;
pub mod http;
pub mod mesh;
pub mod metadata_store;
pub mod net;
pub mod report;
pub mod rt;
pub mod signal;
pub mod tls;
#[cfg(test)]
pub mod sim_disk;
