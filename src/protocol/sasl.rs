//! The server side of SASL/PLAIN (RFC 4616) and SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802,
//! RFC 7677), pure: bytes in, bytes or an error out, no I/O. The connection drives it with the
//! tokens of SaslAuthenticate (or the raw v0 frames) and a lookup into the credential store.
//!
//! It behaves as Apache Kafka's `PlainSaslServer` and `ScramSaslServer`:
//!
//! - PLAIN: `[authzid] NUL authcid NUL passwd`; an authzid other than the user is refused. The
//!   password is checked against the SCRAM store ([`ScramCredential::verifies`]), as Redpanda
//!   does, so one store serves both mechanisms and no password is ever kept.
//! - SCRAM: gs2 header `n` only (no channel binding); SCRAM's `Hi()` is PBKDF2 over the UTF-8
//!   password bytes with no SASLprep, as Kafka's `ScramFormatter`; Kafka's `tokenauth=true`
//!   extension (delegation tokens, not supported) fails the authentication, other extensions are
//!   ignored; a credential below the mechanism's minimum iterations is refused.
//!
//! Where Kafka is laxer than the RFC, this follows the RFC, which no real client trips over: the
//! channel-binding attribute `c=` of the final message must be the base64 of the client's own gs2
//! header (Kafka does not look); the AuthMessage is made of the messages' bytes as received (Kafka
//! rebuilds it from the parsed fields); a mandatory extension `m=` fails (Kafka drops it); user
//! names may be any UTF-8 (Kafka's grammar admits ASCII only).
//!
//! Guarantees: every function is total on its input (any bytes give a value or an error, never a
//! panic); a message over [`SASL_TOKEN_MAX_BYTES`] is refused before it is read; a failure never
//! says whether the user exists (an unknown user and a wrong proof fail alike); proofs and
//! password checks compare in constant time. Hashing, HMAC, PBKDF2 and randomness come from
//! `ring`.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The longest SASL message taken, in bytes: far above any real one (a SCRAM message is a few
/// hundred bytes), low enough that a hostile client cannot make the broker buffer much.
pub const SASL_TOKEN_MAX_BYTES: usize = 64 * 1024;

/// The most PBKDF2 iterations a credential may have, as Kafka (AlterUserScramCredentials refuses
/// more): a SCRAM exchange runs no PBKDF2 on the server, but creating a credential and checking a
/// PLAIN password run it once per iteration, on the core that serves the request.
pub const MAX_ITERATIONS: i32 = 16384;

/// The random part of a server nonce, in bytes (base64'd to 24 printable characters, none a
/// comma): 144 bits, above Kafka's 130.
const SERVER_NONCE_BYTES: usize = 18;

/// What every failed check says, so a client cannot tell an unknown user from a wrong password.
const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid user credentials";

/// A SCRAM mechanism Spate offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name clients ask for in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Kafka's `ScramMechanism` code, as DescribeUserScramCredentials and
    /// AlterUserScramCredentials carry it (0 is UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        ScramMechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// The fewest PBKDF2 iterations a credential may have: 4096 for both, as Kafka (RFC 7677's
    /// recommendation for SHA-256).
    pub fn min_iterations(self) -> i32 {
        4096
    }

    /// The hash's output length in bytes: that of every key, signature and proof.
    pub(crate) fn hash_len(self) -> usize {
        self.digest().output_len()
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// SCRAM's `Hi(password, salt, i)`: PBKDF2 with the mechanism's HMAC and one output block. An
/// iteration count below 1 derives as 1 (the callers check the range).
pub(crate) fn salted_password(m: ScramMechanism, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
    let i = NonZeroU32::new(iterations.max(1).unsigned_abs()).unwrap_or(NonZeroU32::MIN);
    let mut out = vec![0; m.hash_len()];
    pbkdf2::derive(m.pbkdf2(), i, salt, password, &mut out);
    out
}

pub(crate) fn mac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(m.hmac(), key), data).as_ref().to_vec()
}

pub(crate) fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(m.digest(), data).as_ref().to_vec()
}

pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// `a == b` in time independent of where they differ. ring 0.17.14 deprecates its
/// `constant_time` module for removal; `hmac::verify` is its supported constant-time comparison,
/// so this compares HMACs of both under a one-off key, equal exactly when the inputs are (HMAC is
/// collision resistant). Lengths are not secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let alg = hmac::HMAC_SHA256;
    let key = hmac::Key::generate(alg, &SystemRandom::new()).unwrap_or_else(|_| hmac::Key::new(alg, b"spate sasl"));
    hmac::verify(&key, a, hmac::sign(&key, b).as_ref()).is_ok()
}

/// What is stored for one user and mechanism: never the password.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// From a password: PBKDF2-HMAC with the mechanism's hash, then ClientKey/StoredKey/ServerKey.
    /// The password is its UTF-8 bytes, unnormalized, as Kafka. An iteration count below 1
    /// derives as 1 but is stored as given: callers check it against
    /// [`ScramMechanism::min_iterations`] and [`MAX_ITERATIONS`].
    pub fn from_password(m: ScramMechanism, password: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
        ScramCredential::from_salted_password(m, &salted_password(m, password, salt, iterations), salt, iterations)
    }

    /// From an already salted password (AlterUserScramCredentials sends SaltedPassword, salt,
    /// iterations), so the password never reaches the broker.
    pub fn from_salted_password(m: ScramMechanism, salted_password: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
        let client_key = mac(m, salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash(m, &client_key),
            server_key: mac(m, salted_password, b"Server Key"),
        }
    }

    /// A random salt and the credential: used by `spate user create`. The salt is as long as the
    /// hash output (32 or 64 random bytes). Kafka's `ScramFormatter` uses the ASCII digits of a
    /// 130-bit random number in base 36 instead; a salt is opaque bytes to every client, so only
    /// its entropy matters, and this has more. Panics only if the OS cannot supply randomness.
    pub fn generate(m: ScramMechanism, password: &[u8], iterations: i32) -> ScramCredential {
        let mut salt = vec![0; m.hash_len()];
        SystemRandom::new().fill(&mut salt).expect("the operating system's random generator failed");
        ScramCredential::from_password(m, password, &salt, iterations)
    }

    /// Whether `password` is this credential's (for SASL/PLAIN, checked against the SCRAM store,
    /// as Redpanda does): derives StoredKey from it and compares in constant time. Costs the
    /// credential's iterations of PBKDF2. False for a credential with fewer than 1 iteration.
    pub fn verifies(&self, m: ScramMechanism, password: &[u8]) -> bool {
        if self.iterations < 1 {
            return false;
        }
        let candidate = ScramCredential::from_password(m, password, &self.salt, self.iterations);
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }
}

/// Why a SASL message was refused; either way the authentication is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// Malformed message: the text says what (goes to the client as the error message and to the
    /// log). It never quotes the message.
    Malformed(String),
    /// Unknown user, wrong password/proof, bad nonce, unsupported extension/channel binding, etc.
    /// The text is what Kafka says ("Authentication failed: Invalid user credentials" style),
    /// never revealing whether the user exists.
    Failed(String),
}

impl std::fmt::Display for SaslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslError::Malformed(s) | SaslError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for SaslError {}

fn malformed(what: &str, why: &str) -> SaslError {
    SaslError::Malformed(format!("Invalid {what}: {why}"))
}

fn failed(why: &str) -> SaslError {
    SaslError::Failed(why.to_string())
}

/// The size check and UTF-8 decoding every message goes through first.
fn text<'a>(token: &'a [u8], what: &str) -> Result<&'a str, SaslError> {
    if token.len() > SASL_TOKEN_MAX_BYTES {
        return Err(malformed(what, &format!("{} bytes, more than {SASL_TOKEN_MAX_BYTES}", token.len())));
    }
    std::str::from_utf8(token).map_err(|_| malformed(what, "not UTF-8"))
}

/// SASL/PLAIN's one message: `[authzid] NUL authcid NUL passwd` (RFC 4616). Refuses an authzid
/// that is non-empty and differs from authcid (Kafka does), an empty user or password, other than
/// 2 NULs, invalid UTF-8. Returns (user, password). Errors carry Kafka's `PlainSaslServer` texts.
pub fn parse_plain(token: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
    let what = "SASL/PLAIN response";
    let s = text(token, what)?;
    // Kafka counts at most 4 tokens, and says so.
    let parts: Vec<&str> = s.splitn(4, '\0').collect();
    let [authzid, user, password] = parts[..] else {
        return Err(SaslError::Malformed(format!("Invalid SASL/PLAIN response: expected 3 tokens, got {}", parts.len())));
    };
    if user.is_empty() {
        return Err(SaslError::Malformed("Authentication failed: username not specified".into()));
    }
    if password.is_empty() {
        return Err(SaslError::Malformed("Authentication failed: password not specified".into()));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(failed("Authentication failed: Client requested an authorization id that is different from username"));
    }
    Ok((user.to_string(), password.as_bytes().to_vec()))
}

/// A `saslname` with `=2C` and `=3D` turned back into `,` and `=`; any other `=`, and NUL, are
/// refused, as is an empty name.
fn unescape_saslname(s: &str, what: &str) -> Result<String, SaslError> {
    if s.is_empty() {
        return Err(malformed(what, "empty user name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(['=', '\0']) {
        out.push_str(rest.get(..at).unwrap_or_default());
        let tail = rest.get(at..).unwrap_or_default();
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return Err(malformed(what, "user name with NUL or '=' not followed by 2C or 3D"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce: printable ASCII but ','.
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Checks one extension attribute `key=value` (Kafka's grammar: letters, then a non-empty value;
/// the message was split on commas already) and returns it.
fn extension<'a>(attr: &'a str, what: &str) -> Result<(&'a str, &'a str), SaslError> {
    match attr.split_once('=') {
        Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) && !v.is_empty() && !v.contains('\0') => {
            Ok((k, v))
        }
        _ => Err(malformed(what, "bad attribute (expected key=value)")),
    }
}

/// client-first-message, parsed.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    authzid: Option<String>,
    user: String,
    nonce: &'a str,
    bare: &'a str,
    token_auth: bool,
}

fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, SaslError> {
    let what = "SCRAM client first message";
    let (flag, rest) = msg.split_once(',').ok_or_else(|| malformed(what, "no GS2 header"))?;
    match flag {
        "n" => {}
        "y" => return Err(failed("Authentication failed: the client asked for channel binding (gs2 flag y), which is not supported")),
        f if f.starts_with("p=") => {
            return Err(failed("Authentication failed: channel binding is not supported"));
        }
        _ => return Err(malformed(what, "GS2 channel-binding flag is not n, y or p=")),
    }
    let (authz, bare) = rest.split_once(',').ok_or_else(|| malformed(what, "incomplete GS2 header"))?;
    let authzid = match authz {
        "" => None,
        a => Some(unescape_saslname(a.strip_prefix("a=").ok_or_else(|| malformed(what, "bad GS2 authzid"))?, what)?),
    };
    let gs2_header = msg.get(..flag.len() + authz.len() + 2).ok_or_else(|| malformed(what, "bad GS2 header"))?;
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(failed("Authentication failed: mandatory SCRAM extensions are not supported"));
    }
    let user = unescape_saslname(first.strip_prefix("n=").ok_or_else(|| malformed(what, "no user name (n=)"))?, what)?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(|| malformed(what, "no nonce (r=)"))?;
    if !valid_nonce(nonce) {
        return Err(malformed(what, "the nonce is empty or not printable ASCII"));
    }
    let mut token_auth = false;
    for attr in attrs {
        let (k, v) = extension(attr, what)?;
        // Kafka: `Boolean.parseBoolean`, so any case of "true".
        token_auth |= k == "tokenauth" && v.eq_ignore_ascii_case("true");
    }
    Ok(ClientFirst { gs2_header, authzid, user, nonce, bare, token_auth })
}

/// client-final-message, parsed.
struct ClientFinal<'a> {
    without_proof: &'a str,
    channel_binding: Vec<u8>,
    nonce: &'a str,
    proof: Vec<u8>,
}

fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, SaslError> {
    let what = "SCRAM client final message";
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or_else(|| malformed(what, "no proof (p=)"))?;
    if proof.contains(',') {
        return Err(malformed(what, "the proof is not the last attribute"));
    }
    let proof = B64.decode(proof).map_err(|_| malformed(what, "the proof is not base64"))?;
    let mut attrs = without_proof.split(',');
    let cb = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or_else(|| malformed(what, "no channel binding (c=)"))?;
    let channel_binding = B64.decode(cb).map_err(|_| malformed(what, "the channel binding is not base64"))?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(|| malformed(what, "no nonce (r=)"))?;
    if !valid_nonce(nonce) {
        return Err(malformed(what, "the nonce is empty or not printable ASCII"));
    }
    for attr in attrs {
        extension(attr, what)?;
    }
    Ok(ClientFinal { without_proof, channel_binding, nonce, proof })
}

/// One SCRAM authentication on the server, first message to last. Holds the credential and the
/// messages so far; consumed by [`ScramServer::finish`].
pub struct ScramServer {
    mechanism: ScramMechanism,
    user: String,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// How much of `nonce` is the client's.
    client_nonce_len: usize,
}

/// Leaves the keys out.
impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer").field("mechanism", &self.mechanism).field("user", &self.user).finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Reads client-first-message (gs2 header `n,,` or `n,a=<authzid>,`; `y`/`p` channel binding
    /// refused; an authzid must equal the user, as Kafka; `=2C`/`=3D` unescaped in names, any
    /// other `=` refused; Kafka's `tokenauth=true` fails since delegation tokens are not
    /// supported; other extensions ignored, as Kafka), looks the user up with `lookup` (None:
    /// Failed), and returns the server-first-message. The server nonce is the client's followed by
    /// 18 random bytes in base64 (24 printable characters, no comma).
    pub fn start(
        m: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let mut random = [0u8; SERVER_NONCE_BYTES];
        SystemRandom::new().fill(&mut random).map_err(|_| failed("Authentication failed: no randomness for the server nonce"))?;
        ScramServer::start_with_nonce(m, client_first, &B64.encode(random), lookup)
    }

    /// [`ScramServer::start`] with a given server nonce suffix (printable, no comma): for the RFC
    /// test vectors, and for the fuzz target, which must be able to echo the nonce back.
    pub(crate) fn start_with_nonce(
        m: ScramMechanism,
        client_first: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let first = parse_client_first(text(client_first, "SCRAM client first message")?)?;
        if first.token_auth {
            return Err(failed("Authentication failed: delegation tokens are not supported"));
        }
        // Before the lookup, so the answer cannot depend on whether the user exists.
        if first.authzid.as_ref().is_some_and(|a| *a != first.user) {
            return Err(failed("Authentication failed: Client requested an authorization id that is different from username"));
        }
        let credential = lookup(&first.user).ok_or_else(|| failed(INVALID_CREDENTIALS))?;
        if credential.iterations < m.min_iterations() {
            return Err(failed(INVALID_CREDENTIALS));
        }
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
        let reply = server_first.clone().into_bytes();
        let server = ScramServer {
            mechanism: m,
            user: first.user,
            credential,
            gs2_header: first.gs2_header.to_string(),
            client_first_bare: first.bare.to_string(),
            server_first,
            client_nonce_len: first.nonce.len(),
            nonce,
        };
        Ok((server, reply))
    }

    /// Reads client-final-message (`c=` must be the base64 of the client's gs2 header; `r=` must
    /// equal the full nonce; `p=` the proof, as long as the hash), verifies the proof
    /// (ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = proof XOR ClientSignature;
    /// H(ClientKey) == StoredKey, in constant time), and returns the authenticated user name and
    /// the server-final-message `v=<ServerSignature>`.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let what = "SCRAM client final message";
        let fin = parse_client_final(text(client_final, what)?)?;
        let m = self.mechanism;
        if fin.proof.len() != m.hash_len() {
            return Err(malformed(what, &format!("a proof of {} bytes, {} needs {}", fin.proof.len(), m.name(), m.hash_len())));
        }
        // librdkafka before 2.6.1 sends the client nonce again in front of the full nonce
        // (librdkafka#4895); Kafka 3.8.1 accepted that, Kafka 4 refuses it, which leaves every
        // such client (Debian's kcat among them) unable to log in. Accepted here in exactly that
        // form: it still carries the server's nonce, and the proof covers the message as sent.
        let repeated = fin.nonce.len() == self.nonce.len() + self.client_nonce_len
            && fin.nonce.starts_with(&self.nonce[..self.client_nonce_len])
            && fin.nonce.ends_with(self.nonce.as_str());
        if fin.nonce != self.nonce && !repeated {
            return Err(failed("Authentication failed: Invalid client nonce in the final client message"));
        }
        if fin.channel_binding != self.gs2_header.as_bytes() {
            return Err(failed("Authentication failed: the channel binding does not match the GS2 header"));
        }
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, fin.without_proof);
        let client_signature = mac(m, &self.credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&fin.proof, &client_signature);
        if !constant_time_eq(&hash(m, &client_key), &self.credential.stored_key) {
            return Err(failed(INVALID_CREDENTIALS));
        }
        let server_signature = mac(m, &self.credential.server_key, auth_message.as_bytes());
        Ok((self.user, format!("v={}", B64.encode(server_signature)).into_bytes()))
    }

    /// The user named in the client-first-message (unescaped); authenticated only once
    /// [`ScramServer::finish`] succeeds.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// A random salt and the password salted with it (PBKDF2), as AlterUserScramCredentials sends
/// them: what `spate user create` computes so that the password never leaves the client.
pub fn salt_password(m: ScramMechanism, password: &[u8], iterations: i32) -> (Vec<u8>, Vec<u8>) {
    use ring::rand::SecureRandom;
    let mut salt = vec![0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut salt).expect("the system's random source works");
    let salted = salted_password(m, password, &salt, iterations);
    (salt, salted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT_7677: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_NONCE_7677: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE_7677: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn pencil(m: ScramMechanism) -> ScramCredential {
        ScramCredential::from_password(m, b"pencil", &B64.decode(SALT_7677).unwrap(), 4096)
    }

    fn only(user: &'static str, cred: ScramCredential) -> impl FnOnce(&str) -> Option<ScramCredential> {
        move |u| (u == user).then_some(cred)
    }

    /// The client's side of one exchange, as RFC 5802 describes it.
    struct Client {
        m: ScramMechanism,
        password: Vec<u8>,
        gs2_header: String,
        bare: String,
    }

    impl Client {
        fn new(m: ScramMechanism, saslname: &str, password: &[u8]) -> Client {
            Client::with(m, "n,,", &format!("n={saslname},r=clientnonce0123"), password)
        }

        fn with(m: ScramMechanism, gs2_header: &str, bare: &str, password: &[u8]) -> Client {
            Client { m, password: password.to_vec(), gs2_header: gs2_header.into(), bare: bare.into() }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.bare).into_bytes()
        }

        /// The client-final-message for `server_first` and the server-final-message expected.
        fn last(&self, server_first: &[u8], extensions: &str) -> (Vec<u8>, Vec<u8>) {
            self.last_with_nonce_prefix(server_first, extensions, "")
        }

        /// [`Client::last`] with `prefix` before the nonce (librdkafka before 2.6.1 repeats its
        /// own nonce there).
        fn last_with_nonce_prefix(&self, server_first: &[u8], extensions: &str, prefix: &str) -> (Vec<u8>, Vec<u8>) {
            let sf = std::str::from_utf8(server_first).unwrap();
            let mut it = sf.split(',');
            let nonce = format!("{prefix}{}", it.next().unwrap().strip_prefix("r=").unwrap());
            let salt = B64.decode(it.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
            let i: i32 = it.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
            let salted = salted_password(self.m, &self.password, &salt, i);
            let client_key = mac(self.m, &salted, b"Client Key");
            let stored_key = hash(self.m, &client_key);
            let without_proof = format!("c={},r={nonce}{extensions}", B64.encode(&self.gs2_header));
            let auth = format!("{},{sf},{without_proof}", self.bare);
            let proof = xor(&client_key, &mac(self.m, &stored_key, auth.as_bytes()));
            let server_sig = mac(self.m, &mac(self.m, &salted, b"Server Key"), auth.as_bytes());
            (
                format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
                format!("v={}", B64.encode(server_sig)).into_bytes(),
            )
        }
    }

    fn failed_with(r: Result<impl std::fmt::Debug, SaslError>) -> String {
        match r {
            Err(SaslError::Failed(s)) => s,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T, SaslError>) -> bool {
        matches!(r, Err(SaslError::Malformed(_)))
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let first = format!("n,,n=user,r={CLIENT_NONCE_7677}");
        let m = ScramMechanism::Sha256;
        let (server, sf) = ScramServer::start_with_nonce(m, first.as_bytes(), SERVER_NONCE_7677, only("user", pencil(m))).unwrap();
        assert_eq!(sf, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert_eq!(server.user(), "user");
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (user, v) = server.finish(last).unwrap();
        assert_eq!(user, "user");
        assert_eq!(v, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// The RFC 7677 inputs under SHA-512, expected values from Python's hashlib and hmac (an
    /// implementation independent of ring).
    #[test]
    fn sha512_known_answer() {
        let first = format!("n,,n=user,r={CLIENT_NONCE_7677}");
        let m = ScramMechanism::Sha512;
        let (server, _) = ScramServer::start_with_nonce(m, first.as_bytes(), SERVER_NONCE_7677, only("user", pencil(m))).unwrap();
        let last = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                    p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
        let (_, v) = server.finish(last.as_bytes()).unwrap();
        assert_eq!(v, b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==".to_vec());
    }

    #[test]
    fn full_exchange_both_mechanisms() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::generate(m, b"s3cret", 4096);
            let client = Client::new(m, "alice", b"s3cret");
            let (server, sf) = ScramServer::start(m, &client.first(), only("alice", cred.clone())).unwrap();
            let nonce = std::str::from_utf8(&sf).unwrap().split(',').next().unwrap().strip_prefix("r=").unwrap().to_string();
            let suffix = nonce.strip_prefix("clientnonce0123").expect("the server nonce extends the client's");
            assert!(suffix.len() >= 24 && valid_nonce(suffix), "server nonce suffix {suffix:?}");
            let (last, expected_v) = client.last(&sf, "");
            assert_eq!(server.finish(&last).unwrap(), ("alice".to_string(), expected_v), "{}", m.name());
            // Every start draws a new nonce.
            let (_, sf2) = ScramServer::start(m, &client.first(), only("alice", cred)).unwrap();
            assert_ne!(sf, sf2);
        }
    }

    #[test]
    fn wrong_password_unknown_user_and_tampering_fail() {
        let m = ScramMechanism::Sha256;
        let cred = ScramCredential::generate(m, b"right", 4096);
        let run = |client: &Client, tamper: &dyn Fn(Vec<u8>) -> Vec<u8>| {
            let (server, sf) = ScramServer::start(m, &client.first(), only("bob", cred.clone()))?;
            server.finish(&tamper(client.last(&sf, "").0))
        };
        let same = |v: Vec<u8>| v;
        let wrong = failed_with(run(&Client::new(m, "bob", b"wrong"), &same));
        assert_eq!(wrong, INVALID_CREDENTIALS);
        // An unknown user fails with the same words as a wrong password.
        assert_eq!(failed_with(run(&Client::new(m, "eve", b"right"), &same)), wrong);
        let client = Client::new(m, "bob", b"right");
        assert!(run(&client, &same).is_ok());
        // A nonce changed in its last character.
        let nonce_changed = |v: Vec<u8>| {
            let s = String::from_utf8(v).unwrap();
            let at = s.find(",p=").unwrap() - 1;
            let c = if &s[at..at + 1] == "A" { "B" } else { "A" };
            format!("{}{c}{}", &s[..at], &s[at + 1..]).into_bytes()
        };
        assert!(failed_with(run(&client, &nonce_changed)).contains("nonce"));
        // One bit of the proof flipped.
        let proof_changed = |v: Vec<u8>| {
            let s = String::from_utf8(v).unwrap();
            let (head, p) = s.rsplit_once(",p=").unwrap();
            let mut proof = B64.decode(p).unwrap();
            proof[3] ^= 1;
            format!("{head},p={}", B64.encode(proof)).into_bytes()
        };
        assert_eq!(failed_with(run(&client, &proof_changed)), INVALID_CREDENTIALS);
        // Channel binding other than the gs2 header ("y,," in base64).
        let cb_changed = |v: Vec<u8>| String::from_utf8(v).unwrap().replacen("c=biws", "c=eSws", 1).into_bytes();
        assert!(failed_with(run(&client, &cb_changed)).contains("channel binding"));
    }

    #[test]
    fn librdkafka_before_2_6_1_repeating_its_nonce_is_served() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::generate(m, b"pw", 4096);
        let client = Client::new(m, "bob", b"pw");
        let start = || ScramServer::start(m, &client.first(), only("bob", cred.clone())).unwrap();
        let (server, sf) = start();
        let (last, v) = client.last_with_nonce_prefix(&sf, "", "clientnonce0123");
        assert_eq!(server.finish(&last).unwrap(), ("bob".to_string(), v));
        // Any other prefix, or the client nonce twice over, is still a wrong nonce.
        for prefix in ["clientnonce0124", "clientnonce0123clientnonce0123", "x"] {
            let (server, sf) = start();
            let (last, _) = client.last_with_nonce_prefix(&sf, "", prefix);
            assert!(failed_with(server.finish(&last)).contains("nonce"), "{prefix}");
        }
    }

    #[test]
    fn escaped_names_and_authzid() {
        let m = ScramMechanism::Sha256;
        let cred = ScramCredential::generate(m, b"pw", 4096);
        let client = Client::new(m, "a=2Cb=3Dc", b"pw");
        let (server, sf) = ScramServer::start(m, &client.first(), only("a,b=c", cred.clone())).unwrap();
        assert_eq!(server.user(), "a,b=c");
        assert_eq!(server.finish(&client.last(&sf, "").0).unwrap().0, "a,b=c");
        for bad in ["a=b", "a=2c", "a=", "=3", "a\0b"] {
            let r = ScramServer::start(m, format!("n,,n={bad},r=abc").as_bytes(), |_| Some(cred.clone()));
            assert!(is_malformed(r), "{bad:?}");
        }
        // An authzid equal to the user works, and c= carries that header.
        let client = Client::with(m, "n,a=a=2Cb,", "n=a=2Cb,r=xyz", b"pw");
        let (server, sf) = ScramServer::start(m, &client.first(), only("a,b", cred.clone())).unwrap();
        assert_eq!(server.finish(&client.last(&sf, "").0).unwrap().0, "a,b");
        // Another is refused, whether the user exists or not.
        let other = failed_with(ScramServer::start(m, b"n,a=root,n=a=2Cb,r=xyz", only("a,b", cred.clone())));
        assert!(other.contains("authorization id"));
        assert_eq!(failed_with(ScramServer::start(m, b"n,a=root,n=nobody,r=xyz", |_| None)), other);
    }

    #[test]
    fn channel_binding_and_extensions() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::generate(m, b"pw", 4096);
        let lookup = || {
            let c = cred.clone();
            move |_: &str| Some(c)
        };
        // Channel binding, a mandatory extension, delegation tokens.
        let refused = ["y,,n=u,r=abc", "p=tls-unique,,n=u,r=abc", "n,,m=x,n=u,r=abc", "n,,n=u,r=abc,tokenauth=true"];
        for first in refused.into_iter().chain(["n,,n=u,r=abc,tokenauth=TRUE"]) {
            failed_with(ScramServer::start(m, first.as_bytes(), lookup()));
        }
        // Unknown extensions, and tokenauth=false, are ignored, but are part of the AuthMessage.
        let client = Client::with(m, "n,,", "n=u,r=abc,tokenauth=false,foo=bar", b"pw");
        let (server, sf) = ScramServer::start(m, &client.first(), lookup()).unwrap();
        let (last, v) = client.last(&sf, ",ext=1");
        assert_eq!(server.finish(&last).unwrap(), ("u".into(), v));
    }

    #[test]
    fn credential_below_min_iterations_is_refused() {
        let m = ScramMechanism::Sha256;
        let cred = ScramCredential::from_password(m, b"pw", b"salt", 4095);
        assert_eq!(failed_with(ScramServer::start(m, b"n,,n=u,r=abc", |_| Some(cred))), INVALID_CREDENTIALS);
    }

    #[test]
    fn malformed_first_messages() {
        let m = ScramMechanism::Sha256;
        let cred = pencil(m);
        let huge = format!("n,,n=user,r={}", "a".repeat(SASL_TOKEN_MAX_BYTES));
        let cases: Vec<&[u8]> = vec![
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",
            b"n,b=user,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,user,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=user",
            b"n,,n=user,",
            b"n,,n=user,r=",
            b"n,,n=user,x=abc",
            b"n,,n=user,r=a b",
            b"n,,n=user,r=abc,",
            b"n,,n=user,r=abc,=v",
            b"n,,n=user,r=abc,k=",
            b"n,,n=user,r=abc,k1=v",
            b"n,,n=us\xffer,r=abc",
            huge.as_bytes(),
        ];
        for c in cases {
            assert!(is_malformed(ScramServer::start(m, c, |_| Some(cred.clone()))), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn malformed_final_messages() {
        let m = ScramMechanism::Sha256;
        let cred = pencil(m);
        let start = || ScramServer::start_with_nonce(m, b"n,,n=user,r=abc", "def", |_| Some(cred.clone())).unwrap().0;
        let p = B64.encode([7u8; 32]);
        let huge = format!("c=biws,r=abcdef,p={p}{}", "A".repeat(SASL_TOKEN_MAX_BYTES));
        let cases = [
            String::new(),
            "c=biws".into(),
            "c=biws,r=abcdef".into(),
            "r=abcdef,p=".to_string() + &p,
            "c=biws,p=".to_string() + &p,
            "c=bi!s,r=abcdef,p=".to_string() + &p,
            "c=biw,r=abcdef,p=".to_string() + &p,
            "c=biws,r=,p=".to_string() + &p,
            "c=biws,r=abcdef,p=not base64".into(),
            "c=biws,r=abcdef,p=AAAA".into(),
            "c=biws,r=abcdef,p=".to_string() + &p + ",x=y",
            "c=biws,r=abcdef,bad,p=".to_string() + &p,
            huge,
        ];
        for c in cases {
            assert!(is_malformed(start().finish(c.as_bytes())), "{c:?}");
        }
        assert!(is_malformed(start().finish(b"c=biws,r=abcdef,p=\xff")));
        // Well formed but wrong: Failed.
        failed_with(start().finish(format!("c=biws,r=abcdef,p={p}").as_bytes()));
    }

    /// Every prefix and every one-byte change of a real exchange gives an answer, never a panic.
    #[test]
    fn truncations_and_mutations_do_not_panic() {
        let m = ScramMechanism::Sha256;
        let cred = pencil(m);
        let client = Client::new(m, "user", b"pencil");
        let (server, sf) = ScramServer::start(m, &client.first(), |_| Some(cred.clone())).unwrap();
        let nonce = std::str::from_utf8(&sf).unwrap().split(',').next().unwrap().strip_prefix("r=").unwrap().to_string();
        let suffix = nonce.strip_prefix("clientnonce0123").unwrap().to_string();
        let (last, _) = client.last(&sf, "");
        drop(server);
        let first = client.first();
        let variants = |msg: &[u8]| {
            let mut out: Vec<Vec<u8>> = (0..msg.len()).map(|n| msg[..n].to_vec()).collect();
            for i in 0..msg.len() {
                for b in [0u8, b',', b'=', 0xff, b'A'] {
                    let mut v = msg.to_vec();
                    v[i] = b;
                    out.push(v);
                }
            }
            out
        };
        for v in variants(&first) {
            let _ = ScramServer::start(m, &v, |_| Some(cred.clone()));
        }
        for v in variants(&last) {
            let (server, _) = ScramServer::start_with_nonce(m, &first, &suffix, |_| Some(cred.clone())).unwrap();
            let r = server.finish(&v);
            assert!(r.is_err() || v == last);
        }
    }

    #[test]
    fn credentials() {
        for m in ScramMechanism::ALL {
            let salt = b"0123456789abcdef";
            let from_pw = ScramCredential::from_password(m, b"pencil", salt, 4096);
            let salted = salted_password(m, b"pencil", salt, 4096);
            assert_eq!(ScramCredential::from_salted_password(m, &salted, salt, 4096), from_pw);
            assert_eq!((from_pw.stored_key.len(), from_pw.server_key.len()), (m.hash_len(), m.hash_len()));
            assert!(from_pw.verifies(m, b"pencil"));
            assert!(!from_pw.verifies(m, b"pencil "));
            assert!(!from_pw.verifies(m, b""));
            let g = ScramCredential::generate(m, b"pencil", 4096);
            assert_eq!((g.salt.len(), g.iterations), (m.hash_len(), 4096));
            assert!(g.verifies(m, b"pencil") && !g.verifies(m, b"Pencil"));
            assert_ne!(g.salt, ScramCredential::generate(m, b"pencil", 4096).salt);
            let mut broken = g.clone();
            broken.iterations = 0;
            assert!(!broken.verifies(m, b"pencil"));
        }
        // RFC 7677's SaltedPassword, StoredKey and ServerKey for "pencil" do the exchange above;
        // the other mechanism's keys do not.
        assert!(!pencil(ScramMechanism::Sha512).verifies(ScramMechanism::Sha256, b"pencil"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn mechanisms() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
            assert_eq!(m.min_iterations(), 4096);
        }
        assert_eq!((ScramMechanism::Sha256.kafka_type(), ScramMechanism::Sha512.kafka_type()), (1, 2));
        assert_eq!(ScramMechanism::Sha512.name(), "SCRAM-SHA-512");
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
        assert_eq!(ScramMechanism::from_kafka_type(3), None);
    }

    #[test]
    fn plain() {
        assert_eq!(parse_plain(b"\0alice\0pw").unwrap(), ("alice".into(), b"pw".to_vec()));
        assert_eq!(parse_plain(b"alice\0alice\0p w=,").unwrap(), ("alice".into(), b"p w=,".to_vec()));
        assert_eq!(parse_plain("\0j\u{f6}rg\0p\u{e4}ss".as_bytes()).unwrap(), ("j\u{f6}rg".into(), "p\u{e4}ss".as_bytes().to_vec()));
        assert!(failed_with(parse_plain(b"root\0alice\0pw")).contains("authorization id"));
        let huge = [b"\0u\0".as_slice(), &vec![b'p'; SASL_TOKEN_MAX_BYTES]].concat();
        for bad in [
            b"".as_slice(),
            b"alice",
            b"\0alice",
            b"\0alice\0pw\0",
            b"\0\0\0\0\0\0",
            b"\0\0pw",
            b"\0alice\0",
            b"\0al\xffice\0pw",
            &huge,
        ] {
            assert!(is_malformed(parse_plain(bad)), "{:?}", String::from_utf8_lossy(bad));
        }
        match parse_plain(b"\0a\0b\0c\0d") {
            Err(SaslError::Malformed(s)) => assert_eq!(s, "Invalid SASL/PLAIN response: expected 3 tokens, got 4"),
            other => panic!("{other:?}"),
        }
    }
}
