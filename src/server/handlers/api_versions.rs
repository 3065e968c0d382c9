//! ApiVersions (key 18): the APIs and versions in [`super::SUPPORTED`]. A version newer than
//! ours is answered at v0 with UNSUPPORTED_VERSION and the list, so the client can pick (KIP-511).
//!
//! From v3 the answer carries Kafka's features (KIP-584): `transaction.version`, supported 0-2
//! and finalized at the configured `transaction_version`. Java clients 4.x read it to choose
//! transaction version 2 (KIP-890 part 2); at 1, EndTxn and TxnOffsetCommit are offered up to
//! v4 only, so no client takes up version 2's per-transaction epoch bump.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};

use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 4);

/// The feature that tells clients which transaction protocol to speak.
const TRANSACTION_VERSION: &str = "transaction.version";

/// The finalized features' epoch: Kafka's is the metadata offset they were set at; Spate's
/// features are set at start, so the start time (a client keeps the answer of the highest epoch).
fn features_epoch() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(crate::storage::now_ms)
}

/// `transaction_version`: the configured `transaction.version` (1 or 2).
pub fn handle(version: i16, _body: Bytes, transaction_version: i16) -> (ResponseKind, i16) {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = super::SUPPORTED
        .iter()
        .map(|s| {
            let max = match s.key {
                ApiKey::EndTxn | ApiKey::TxnOffsetCommit if transaction_version < 2 => s.max.min(4),
                _ => s.max,
            };
            ApiVersion::default().with_api_key(s.key as i16).with_min_version(s.min).with_max_version(max)
        })
        .collect();
    resp.supported_features =
        vec![SupportedFeatureKey::default().with_name(TRANSACTION_VERSION.into()).with_min_version(0).with_max_version(2)];
    resp.finalized_features_epoch = features_epoch();
    resp.finalized_features = vec![FinalizedFeatureKey::default()
        .with_name(TRANSACTION_VERSION.into())
        .with_min_version_level(transaction_version)
        .with_max_version_level(transaction_version)];
    if !(VERSIONS.0..=VERSIONS.1).contains(&version) {
        resp.error_code = ResponseError::UnsupportedVersion.code();
        return (ResponseKind::ApiVersions(resp), 0);
    }
    (ResponseKind::ApiVersions(resp), version)
}
