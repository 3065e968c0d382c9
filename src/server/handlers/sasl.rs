//! SaslHandshake (key 17) and SaslAuthenticate (key 36): a client on a SASL_PLAINTEXT or SASL_SSL
//! listener picks a mechanism, then sends its tokens in SaslAuthenticate requests; after
//! SaslHandshake v0 (deprecated, still offered by Kafka 4, and which librdkafka before 2.10 needs
//! to see offered) they come as bare length-prefixed frames instead ([`raw_token`]). PLAIN and SCRAM-SHA-256/512 are checked
//! against the SCRAM credentials in the metadata image (PLAIN's password against the user's
//! SHA-256 credential, else its SHA-512 one, as Redpanda does), so one store serves every
//! mechanism and no password is ever kept.
//!
//! A failed authentication is answered with SASL_AUTHENTICATION_FAILED and a message that does
//! not say whether the user exists; the connection is then closed (`server::connection`), as
//! Kafka closes it, so a client cannot try passwords on one connection. Re-authentication
//! (KIP-368) runs the same exchange on an authenticated connection and must prove the same user.

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};

use super::super::session::{Sasl, Session};
use super::super::shard::Shard;
use crate::protocol::sasl::{self, SaslError, ScramMechanism, ScramServer};
use crate::protocol::{code, ResponseError, StrBytes};
use crate::storage::now_ms;

pub const HANDSHAKE_VERSIONS: (i16, i16) = (0, 1);
pub const AUTHENTICATE_VERSIONS: (i16, i16) = (0, 2);

/// The message a failed authentication gets, whatever failed.
const FAILED: &str = "Authentication failed: Invalid username or password";

pub fn handshake(shard: &Shard, session: &Session, version: i16, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let offered = &shard.config.sasl_mechanisms;
    let mut resp = SaslHandshakeResponse::default()
        .with_mechanisms(offered.iter().map(|m| StrBytes::from_static_str(m)).collect());
    let mut state = session.sasl.borrow_mut();
    match &*state {
        Sasl::Handshake | Sasl::Done { .. } => {}
        _ => return resp.with_error_code(code(ResponseError::IllegalSaslState)),
    }
    match offered.iter().find(|m| m.eq_ignore_ascii_case(req.mechanism.as_str())) {
        Some(m) => {
            *state = Sasl::Token(m);
            session.raw_tokens.set(version == 0);
        }
        None => {
            tracing::info!(peer = %session.peer, mechanism = %req.mechanism.as_str(), "SASL mechanism not enabled (sasl_enabled_mechanisms)");
            resp.error_code = code(ResponseError::UnsupportedSaslMechanism);
        }
    }
    resp
}

pub fn authenticate(shard: &Shard, session: &Session, version: i16, req: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    let resp = SaslAuthenticateResponse::default();
    let state = std::mem::replace(&mut *session.sasl.borrow_mut(), Sasl::Handshake);
    let mechanism = match &state {
        Sasl::Token(m) => *m,
        Sasl::Scram(_, m) => *m,
        other => {
            let keep = match other {
                Sasl::NotUsed => Sasl::NotUsed,
                Sasl::Done { mechanism, expires_at_ms } => Sasl::Done { mechanism, expires_at_ms: *expires_at_ms },
                _ => Sasl::Handshake,
            };
            *session.sasl.borrow_mut() = keep;
            return resp
                .with_error_code(code(ResponseError::IllegalSaslState))
                .with_error_message(Some(StrBytes::from_static_str("SaslAuthenticate before a SaslHandshake")));
        }
    };
    let image = shard.image();
    let creds = &image.credentials;
    let listener = session.protocol.name();
    // The user (once proven) and the token to answer with.
    let outcome: Result<(Option<String>, Bytes), SaslError> = match state {
        Sasl::Token("PLAIN") => sasl::parse_plain(&req.auth_bytes).and_then(|(user, password)| {
            if creds.verify_plain(&user, &password) {
                Ok((Some(user), Bytes::new()))
            } else {
                Err(SaslError::Failed(FAILED.into()))
            }
        }),
        Sasl::Token(m) => {
            let mech = ScramMechanism::from_name(m).expect("only enabled mechanisms reach a token");
            ScramServer::start(mech, &req.auth_bytes, |user| creds.get(user, mech).cloned()).map(|(server, first)| {
                *session.sasl.borrow_mut() = Sasl::Scram(Box::new(server), m);
                (None, Bytes::from(first))
            })
        }
        Sasl::Scram(server, _) => server.finish(&req.auth_bytes).map(|(user, last)| (Some(user), Bytes::from(last))),
        _ => unreachable!("matched above"),
    };
    match outcome {
        Ok((None, token)) => resp.with_auth_bytes(token),
        Ok((Some(user), token)) => {
            let previous_user = session.sasl_user.borrow().clone();
            if previous_user.as_ref().is_some_and(|p| *p != user) {
                tracing::warn!(peer = %session.peer, previous = ?previous_user, user, "re-authentication as another user refused");
                crate::metrics::authentication(listener, mechanism, "failed");
                *session.sasl.borrow_mut() = Sasl::Failed;
                return resp
                    .with_error_code(code(ResponseError::SaslAuthenticationFailed))
                    .with_error_message(Some(StrBytes::from_static_str("Re-authentication must be as the same user")));
            }
            let lifetime = shard.config.connections_max_reauth_ms;
            let expires_at_ms = (lifetime > 0).then(|| now_ms() + lifetime);
            tracing::debug!(peer = %session.peer, user, mechanism, "SASL authentication succeeded");
            crate::metrics::authentication(listener, mechanism, "ok");
            session.set_user(user.clone());
            *session.sasl_user.borrow_mut() = Some(user);
            *session.sasl.borrow_mut() = Sasl::Done { mechanism, expires_at_ms };
            let mut resp = resp.with_auth_bytes(token);
            if version >= 1 {
                resp.session_lifetime_ms = lifetime;
            }
            resp
        }
        Err(e) => {
            let (kind, message) = match e {
                SaslError::Malformed(m) => ("malformed", m),
                SaslError::Failed(m) => ("failed", m),
            };
            tracing::info!(peer = %session.peer, listener, reason = kind, message, "SASL authentication failed");
            crate::metrics::authentication(listener, mechanism, "failed");
            *session.sasl.borrow_mut() = Sasl::Failed;
            resp.with_error_code(code(ResponseError::SaslAuthenticationFailed)).with_error_message(Some(StrBytes::from_string(message)))
        }
    }
}

/// A bare token after SaslHandshake v0: the token to answer with (also bare), or None when the
/// authentication failed, after which Kafka closes the connection without an answer.
pub fn raw_token(shard: &Shard, session: &Session, token: Vec<u8>) -> Option<Bytes> {
    let resp = authenticate(shard, session, 0, SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)));
    (resp.error_code == 0).then_some(resp.auth_bytes)
}
