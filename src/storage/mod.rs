//! A partition's log on disk: segments of record batches stored exactly as sent on the wire,
//! sparse offset and time indexes, group-committed fdatasync, and crash recovery.
//!
//! Architecture invariants:
//! - A [`log::PartitionLog`] is owned by one core and touched only there (it is `!Send`).
//! - Files are reached only through `crate::io`; nothing here names the runtime.
//! - Offsets only grow: `log_start <= high_watermark <= log_end`, and `durable <= high_watermark`.
//! - Bytes from disk are checked (CRC) before they are trusted; damage is truncated with a log line,
//!   never a panic.

pub mod compact;
pub mod index;
pub mod log;
pub mod producers;
pub mod txn_index;
#[cfg(test)]
mod simulation;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
