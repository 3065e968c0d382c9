//! ApiVersions (key 18): the APIs and versions in [`super::SUPPORTED`]. A version newer than
//! ours is answered at v0 with UNSUPPORTED_VERSION and the list, so the client can pick (KIP-511).

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};

use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 4);

pub fn handle(version: i16, _body: Bytes) -> (ResponseKind, i16) {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = super::SUPPORTED
        .iter()
        .map(|s| ApiVersion::default().with_api_key(s.key as i16).with_min_version(s.min).with_max_version(s.max))
        .collect();
    if !(VERSIONS.0..=VERSIONS.1).contains(&version) {
        resp.error_code = ResponseError::UnsupportedVersion.code();
        return (ResponseKind::ApiVersions(resp), 0);
    }
    (ResponseKind::ApiVersions(resp), version)
}
