//! Who is at the other end of one client connection: the listener it came in by, its address,
//! the principal it proved (TLS client certificate, SASL), and where its SASL exchange stands.
//! Owned by the connection (one core); request tasks read it.
//!
//! The SASL rules, as Kafka's: on a SASL listener a client may send only ApiVersions,
//! SaslHandshake and SaslAuthenticate until it has authenticated, and anything else closes the
//! connection; the connection runs those requests one at a time, each answered before the next
//! is read, so the exchange's state changes in request order. With `connections_max_reauth_ms`
//! (KIP-368) an authentication lasts that long: the client authenticates again on the same
//! connection before then, or its next request after closes it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

use crate::config::security::SecurityProtocol;
use crate::protocol::sasl::ScramServer;

/// Kafka's principal for a client that proved nothing.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// Where a connection's SASL exchange stands.
pub enum Sasl {
    /// No SASL on this listener.
    NotUsed,
    /// Waiting for SaslHandshake.
    Handshake,
    /// SaslHandshake chose this mechanism: waiting for its first token.
    Token(&'static str),
    /// A SCRAM exchange between its first and final messages.
    Scram(Box<ScramServer>, &'static str),
    /// Authenticated; `expires_at_ms` with a session lifetime (KIP-368).
    Done { mechanism: &'static str, expires_at_ms: Option<i64> },
    /// The last authentication failed: the connection closes once its answer is written.
    Failed,
}

pub struct Session {
    pub peer: SocketAddr,
    pub protocol: SecurityProtocol,
    /// The user name of the principal (`User:<name>`): ANONYMOUS until proven. Changed only
    /// with [`Session::set_user`], which keeps `principal` with it.
    pub user: RefCell<String>,
    /// `User:<user>`, kept for the authorizer.
    principal: RefCell<String>,
    /// The client's address as the ACLs name hosts.
    pub host: String,
    pub sasl: RefCell<Sasl>,
    /// The user SASL proved first: re-authentication must prove the same one.
    pub sasl_user: RefCell<Option<String>>,
    /// SaslHandshake v0 was used: the tokens come as bare length-prefixed frames, not in
    /// SaslAuthenticate requests (clients from before Kafka 1.0).
    pub raw_tokens: Cell<bool>,
    /// Until when (ms since the epoch) the connection is not read: a client over its quota
    /// (Kafka's muting; see `server::quota`).
    pub muted_until_ms: Cell<i64>,
}

impl Session {
    pub fn new(peer: SocketAddr, protocol: SecurityProtocol) -> Session {
        Session {
            peer,
            protocol,
            user: RefCell::new(ANONYMOUS.to_string()),
            principal: RefCell::new(format!("User:{ANONYMOUS}")),
            host: peer.ip().to_string(),
            sasl: RefCell::new(if protocol.sasl() { Sasl::Handshake } else { Sasl::NotUsed }),
            sasl_user: RefCell::new(None),
            raw_tokens: Cell::new(false),
            muted_until_ms: Cell::new(0),
        }
    }

    /// Whether requests other than the SASL ones may run now: always without SASL; with it,
    /// once authenticated and before the session expires.
    pub fn may_serve(&self, now_ms: i64) -> bool {
        match &*self.sasl.borrow() {
            Sasl::NotUsed => true,
            Sasl::Done { expires_at_ms, .. } => expires_at_ms.is_none_or(|t| now_ms < t),
            _ => false,
        }
    }

    /// Whether the connection is between SASL messages (its requests then run one at a time).
    pub fn authenticating(&self) -> bool {
        matches!(&*self.sasl.borrow(), Sasl::Handshake | Sasl::Token(_) | Sasl::Scram(..))
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        self.raw_tokens.get() && matches!(&*self.sasl.borrow(), Sasl::Token(_) | Sasl::Scram(..))
    }

    /// Whether the last authentication failed (the connection is to be closed).
    pub fn failed(&self) -> bool {
        matches!(&*self.sasl.borrow(), Sasl::Failed)
    }

    /// `User:<name>`, as Kafka writes principals.
    pub fn principal(&self) -> std::cell::Ref<'_, String> {
        self.principal.borrow()
    }

    /// The user proven (SASL, a client certificate).
    pub fn set_user(&self, name: String) {
        *self.principal.borrow_mut() = format!("User:{name}");
        *self.user.borrow_mut() = name;
    }
}
