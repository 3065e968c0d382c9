//! The Kafka wire protocol as Spate uses it: request framing and header decoding, response
//! encoding, record-batch (v2) validation and patching, bounded decompression of batches'
//! records, error codes.
//!
//! Architecture invariant: this module depends on `kafka-protocol`, `bytes`, `crc32c` and the
//! codec crates only. It
//! knows nothing of the server, storage or runtime, and never panics on bytes from the network.

pub mod batch;
pub mod codec;
pub mod frame;
pub mod sasl;

pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::StrBytes;
pub use kafka_protocol::ResponseError;

/// Kafka's "no error" code.
pub const NONE: i16 = 0;

/// The numeric code of a Kafka error, for response fields.
pub fn code(e: ResponseError) -> i16 {
    e.code()
}
