//! Listeners, TLS and SASL at the protocol level: a raw client and a rustls client against a
//! broker with PLAINTEXT, SSL and SASL_PLAINTEXT listeners. Hostile handshakes (garbage and
//! truncated TLS records, Kafka requests before SASL, oversized tokens, a client stuck
//! mid-handshake) close that connection only, within the authentication deadline, while a
//! well-behaved client goes on; certificates are reloaded without a restart; KIP-368 sessions
//! expire. The real clients over every listener are in tests/clients (check_security.py),
//! tests/java (SecurityTest) and tests/go.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use common::{free_port, Broker, Raw};
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with the
/// `openssl` command.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("running openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let d = dir.to_path_buf();
        openssl(&d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Test CA"]);
        std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        let pki = Pki { dir: d };
        pki.server_cert("server", "localhost");
        pki
    }

    /// A server certificate `<name>.pem` / `<name>.key` for `cn`, signed by the CA.
    fn server_cert(&self, name: &str, cn: &str) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(&self.dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]);
        openssl(
            &self.dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "30", "-extfile", "san.ext"],
        );
    }

    /// A client certificate `<name>.pem` / `<name>.key` with `subject`, signed by the CA.
    fn client_cert(&self, name: &str, subject: &str) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(&self.dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject]);
        std::fs::write(self.dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            &self.dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "30", "-extfile", "client.ext"],
        );
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// A TLS client trusting the test CA, presenting the client certificate `<cert>.pem` if given.
fn tls_client_as(pki: &Pki, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
    Arc::new(match cert {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs: Vec<_> =
                rustls::pki_types::CertificateDer::pem_file_iter(pki.dir.join(format!("{name}.pem"))).unwrap().map(|c| c.unwrap()).collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    })
}

fn tls_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    tls_client_as(pki, None)
}

fn tls_client_with_cert(pki: &Pki, name: &str) -> Arc<rustls::ClientConfig> {
    tls_client_as(pki, Some(name))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(config: &Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One request frame, from client id "security-test".
fn frame<Q: Encodable>(key: ApiKey, version: i16, corr: i32, req: &Q) -> Vec<u8> {
    frame_from("security-test", key, version, corr, req)
}

/// A request and its response over any stream; None when the broker closed it instead.
fn call<S: Read + Write, Q: Encodable, R: Decodable>(s: &mut S, key: ApiKey, version: i16, req: &Q) -> Option<R> {
    s.write_all(&frame(key, version, 7, req)).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    let mut b = bytes::Bytes::from(buf);
    let rhv = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    let h = ResponseHeader::decode(&mut b, rhv).unwrap();
    assert_eq!(h.correlation_id, 7);
    let r = R::decode(&mut b, version).unwrap();
    assert_eq!(b.remaining(), 0);
    Some(r)
}

/// Whether the broker closes `s` within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

/// Creates `user` with a SCRAM-SHA-256 credential over the PLAINTEXT listener.
fn create_user(broker: &Broker, user: &str, password: &str) {
    let mut raw = Raw::connect(broker.port);
    let salt = b"0123456789abcdef".to_vec();
    let mut salted = [0u8; 32];
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, std::num::NonZeroU32::new(4096).unwrap(), &salt, password.as_bytes(), &mut salted);
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(1)
        .with_iterations(4096)
        .with_salt(salt.into())
        .with_salted_password(salted.to_vec().into())]);
    let resp: AlterUserScramCredentialsResponse = raw.call(ApiKey::AlterUserScramCredentials, 0, &req, 0);
    assert_eq!(resp.results[0].error_code, 0, "{:?}", resp.results[0].error_message);
}

fn plain_token(user: &str, password: &str) -> bytes::Bytes {
    format!("\0{user}\0{password}").into_bytes().into()
}

/// SaslHandshake PLAIN then SaslAuthenticate v1 with `user`/`password` on `s`.
fn plain_login<S: Read + Write>(s: &mut S, user: &str, password: &str) -> Option<SaslAuthenticateResponse> {
    let h: SaslHandshakeResponse =
        call(s, ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")))?;
    assert_eq!(h.error_code, 0);
    call(s, ApiKey::SaslAuthenticate, 1, &SaslAuthenticateRequest::default().with_auth_bytes(plain_token(user, password)))
}

fn security_broker(pki: &Pki, ssl: u16, sasl: u16, extra: &[&str]) -> Broker {
    let listeners = format!("PLAINTEXT://127.0.0.1:{{port}},SSL://127.0.0.1:{ssl},SASL_PLAINTEXT://127.0.0.1:{sasl}");
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut args = vec!["--listeners", &listeners, "--ssl-cert-file", &cert, "--ssl-key-file", &key, "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256"];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

#[test]
fn listeners_answer_with_their_own_addresses_and_sasl_gates_requests() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (ssl, sasl) = (free_port(), free_port());
    let broker = security_broker(&pki, ssl, sasl, &[]);
    create_user(&broker, "alice", "secret");

    // TLS: ApiVersions and Metadata, which names the SSL port.
    let config = tls_client(&pki);
    let mut t = tls_connect(&config, ssl).expect("TLS handshake");
    let v: ApiVersionsResponse = call(&mut t, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(v.error_code, 0);
    assert!(v.api_keys.iter().any(|k| k.api_key == ApiKey::SaslHandshake as i16 && k.min_version == 0 && k.max_version == 1));
    let m: MetadataResponse = call(&mut t, ApiKey::Metadata, 9, &MetadataRequest::default()).unwrap();
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].port, ssl as i32, "Metadata over SSL names the SSL listener");

    // SASL: ApiVersions is allowed before authenticating; Metadata closes the connection.
    let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let v: ApiVersionsResponse = call(&mut s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(v.error_code, 0);
    assert!(call::<_, _, MetadataResponse>(&mut s, ApiKey::Metadata, 9, &MetadataRequest::default()).is_none());

    // An unknown mechanism is refused with the list; SaslAuthenticate before a handshake is
    // out of order.
    let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let a: SaslAuthenticateResponse =
        call(&mut s, ApiKey::SaslAuthenticate, 1, &SaslAuthenticateRequest::default().with_auth_bytes(plain_token("alice", "secret"))).unwrap();
    assert_eq!(a.error_code, 34, "ILLEGAL_SASL_STATE");
    let h: SaslHandshakeResponse =
        call(&mut s, ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI"))).unwrap();
    assert_eq!(h.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    assert_eq!(h.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>(), vec!["PLAIN", "SCRAM-SHA-256"]);

    // PLAIN: the right password serves Metadata (naming the SASL_PLAINTEXT port)...
    let a = plain_login(&mut s, "alice", "secret").unwrap();
    assert_eq!(a.error_code, 0, "{:?}", a.error_message);
    let m: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, &MetadataRequest::default()).unwrap();
    assert_eq!(m.brokers[0].port, sasl as i32);

    // ...a wrong one is refused with SASL_AUTHENTICATION_FAILED, and the connection closed.
    let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let a = plain_login(&mut s, "alice", "wrong").unwrap();
    assert_eq!(a.error_code, 58);
    assert_eq!(a.error_message.as_deref(), Some("Authentication failed: Invalid username or password"));
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    // An unknown user gets the same answer.
    let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let a = plain_login(&mut s, "mallory", "secret").unwrap();
    assert_eq!((a.error_code, a.error_message.as_deref()), (58, Some("Authentication failed: Invalid username or password")));

    // SaslHandshake v0: the token goes bare, and so does the answer.
    let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let h: SaslHandshakeResponse =
        call(&mut s, ApiKey::SaslHandshake, 0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).unwrap();
    assert_eq!(h.error_code, 0);
    let token = plain_token("alice", "secret");
    s.write_all(&(token.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&token).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    assert_eq!(i32::from_be_bytes(len), 0, "PLAIN's answer is an empty token");
    let m: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, &MetadataRequest::default()).unwrap();
    assert_eq!(m.brokers[0].port, sasl as i32);

    let metrics = broker.metrics();
    assert!(
        metrics.lines().any(|l| l.starts_with("spate_authentications_total{") && l.contains("outcome=\"failed\"")),
        "failed authentications counted:\n{}",
        metrics.lines().filter(|l| l.contains("authentications")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn hostile_handshakes_close_only_their_connection_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (ssl, sasl) = (free_port(), free_port());
    let broker = security_broker(&pki, ssl, sasl, &[]);
    let started = Instant::now();

    // Garbage instead of a ClientHello: refused at once.
    let mut garbage = TcpStream::connect(("127.0.0.1", ssl)).unwrap();
    garbage.write_all(&[0x47; 64]).unwrap();
    // A Kafka request to the TLS port.
    let mut kafka_on_tls = TcpStream::connect(("127.0.0.1", ssl)).unwrap();
    kafka_on_tls.write_all(&frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default())).unwrap();
    // A TLS record header announcing 16 KiB, then nothing: stuck mid-handshake.
    let mut truncated = TcpStream::connect(("127.0.0.1", ssl)).unwrap();
    truncated.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00]).unwrap();
    // Connected, silent: no handshake at all.
    let mut silent_tls = TcpStream::connect(("127.0.0.1", ssl)).unwrap();
    // SASL: handshake done, then nothing.
    let mut stuck_sasl = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    stuck_sasl.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let h: SaslHandshakeResponse =
        call(&mut stuck_sasl, ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")))
            .unwrap();
    assert_eq!(h.error_code, 0);
    // An oversized SASL token (over 64 KiB) in SaslAuthenticate.
    let mut oversized = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    oversized.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let h: SaslHandshakeResponse =
        call(&mut oversized, ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")))
            .unwrap();
    assert_eq!(h.error_code, 0);
    let big = SaslAuthenticateRequest::default().with_auth_bytes(vec![b'a'; 70_000].into());
    let a: SaslAuthenticateResponse = call(&mut oversized, ApiKey::SaslAuthenticate, 1, &big).unwrap();
    assert_eq!(a.error_code, 58);
    assert!(closed_within(&mut oversized, Duration::from_secs(5)));
    // An oversized bare token after SaslHandshake v0 is refused by its length.
    let mut bare = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
    bare.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _: SaslHandshakeResponse =
        call(&mut bare, ApiKey::SaslHandshake, 0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).unwrap();
    bare.write_all(&(1_000_000i32).to_be_bytes()).unwrap();
    assert!(closed_within(&mut bare, Duration::from_secs(5)));

    assert!(closed_within(&mut garbage, Duration::from_secs(5)), "garbage closed at once");
    assert!(closed_within(&mut kafka_on_tls, Duration::from_secs(5)), "plaintext Kafka on the TLS port closed at once");

    // Meanwhile a TLS client is served.
    let config = tls_client(&pki);
    let mut t = tls_connect(&config, ssl).expect("TLS handshake while hostile ones hang");
    let v: ApiVersionsResponse = call(&mut t, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(v.error_code, 0);

    // The stuck ones go within the deadline (10 s) and a little slack, not before.
    for (name, s) in [("truncated TLS record", &mut truncated), ("silent TLS", &mut silent_tls), ("stuck SASL", &mut stuck_sasl)] {
        assert!(closed_within(s, Duration::from_secs(20)), "{name} not closed");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(9), "{name} closed after {waited:?}, before the deadline");
    }
    // The broker is fine: the TLS client opened before goes on.
    let v: ApiVersionsResponse = call(&mut t, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(v.error_code, 0);
    let log = broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("TLS handshake not done in time"), "{log}");
    assert!(log.contains("SASL authentication not done in time"), "{log}");
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (ssl, sasl) = (free_port(), free_port());
    let _broker = security_broker(&pki, ssl, sasl, &[]);
    let config = tls_client(&pki);
    let subject = |t: &Tls| {
        let der = t.conn.peer_certificates().unwrap()[0].to_vec();
        // The CN is in the DER as plain text: enough to tell the two certificates apart.
        String::from_utf8_lossy(&der).contains("renewed.localhost")
    };
    let old = tls_connect(&config, ssl).unwrap();
    assert!(!subject(&old));
    // A half-written renewal (a key that does not match) keeps the old certificate...
    pki.server_cert("next", "renewed.localhost");
    std::fs::copy(pki.dir.join("next.pem"), pki.dir.join("server.pem")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!subject(&tls_connect(&config, ssl).expect("the old certificate still served")));
    // ...and the key's arrival completes it.
    std::fs::copy(pki.dir.join("next.key"), pki.dir.join("server.key")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if subject(&tls_connect(&config, ssl).unwrap()) {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate is not served");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The connection made before keeps working.
    let mut old = old;
    let v: ApiVersionsResponse = call(&mut old, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(v.error_code, 0);
}

#[test]
fn a_sasl_session_expires_unless_the_client_authenticates_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (ssl, sasl) = (free_port(), free_port());
    let broker = security_broker(&pki, ssl, sasl, &["--connections-max-reauth-ms", "1500"]);
    create_user(&broker, "alice", "secret");
    create_user(&broker, "bob", "secret");
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // The lifetime is told (SaslAuthenticate v1); a client that lets it pass is closed at its
    // next request.
    let mut lazy = connect();
    let a = plain_login(&mut lazy, "alice", "secret").unwrap();
    assert_eq!((a.error_code, a.session_lifetime_ms), (0, 1500));
    // One that authenticates again in time goes on.
    let mut diligent = connect();
    assert_eq!(plain_login(&mut diligent, "alice", "secret").unwrap().error_code, 0);
    std::thread::sleep(Duration::from_millis(800));
    let again = plain_login(&mut diligent, "alice", "secret").unwrap();
    assert_eq!(again.error_code, 0);
    // Re-authenticating as someone else is refused.
    let mut switcher = connect();
    assert_eq!(plain_login(&mut switcher, "alice", "secret").unwrap().error_code, 0);
    let other = plain_login(&mut switcher, "bob", "secret").unwrap();
    assert_eq!(other.error_code, 58);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(call::<_, _, MetadataResponse>(&mut lazy, ApiKey::Metadata, 9, &MetadataRequest::default()).is_none(), "expired session served");
    let m: MetadataResponse = call(&mut diligent, ApiKey::Metadata, 9, &MetadataRequest::default()).unwrap();
    assert_eq!(m.brokers[0].port, sasl as i32);
    assert!(broker.log().contains("after its SASL session expired"));
}

#[test]
fn settings_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let m = Broker::run_failing(&["serve", "--data-dir", data, "--listeners", "SSL://127.0.0.1:0"]);
    assert!(m.contains("needs ssl_cert_file and ssl_key_file"), "{m}");
    let m = Broker::run_failing(&["serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--listeners", "PLAINTEXT://127.0.0.1:0"]);
    assert!(m.contains("listen and listeners are both set"), "{m}");
    let m = Broker::run_failing(&["serve", "--data-dir", data, "--listeners", "SASL_SSL://127.0.0.1:0", "--ssl-cert-file", "/nonexistent.pem", "--ssl-key-file", "/nonexistent.key"]);
    assert!(m.contains("ssl_cert_file /nonexistent.pem"), "{m}");
    let m = Broker::run_failing(&["serve", "--data-dir", data, "--sasl-enabled-mechanisms", "GSSAPI"]);
    assert!(m.contains("GSSAPI"), "{m}");
}

fn produce_code<S: Read + Write>(s: &mut S, topic: &str) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(common::batch(1)))])]);
    let resp: ProduceResponse = call(s, ApiKey::Produce, 9, &req).expect("produce answered");
    resp.responses[0].partition_responses[0].error_code
}

fn metadata_topics<S: Read + Write>(s: &mut S, names: Option<&[&str]>) -> Vec<(String, i16)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let req = MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(names.map(|ns| {
        ns.iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))).collect()
    }));
    let resp: MetadataResponse = call(s, ApiKey::Metadata, 9, &req).expect("metadata answered");
    let mut out: Vec<(String, i16)> = resp.topics.iter().map(|t| (t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(), t.error_code)).collect();
    out.sort();
    out
}

fn create_acl(raw: &mut Raw, resource_type: i8, name: &str, pattern: i8, principal: &str, operation: i8, permission: i8) -> i16 {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    let req = CreateAclsRequest::default().with_creations(vec![AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name.into()))
        .with_resource_pattern_type(pattern)
        .with_principal(StrBytes::from_string(principal.into()))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(operation)
        .with_permission_type(permission)]);
    let resp: CreateAclsResponse = raw.call(ApiKey::CreateAcls, 3, &req, 3);
    resp.results[0].error_code
}

#[test]
fn acls_refuse_with_kafka_codes_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (ssl, sasl) = (free_port(), free_port());
    // The PLAINTEXT listener's anonymous clients are the test's administrator.
    let mut broker = security_broker(&pki, ssl, sasl, &["--authorizer", "acl", "--super-users", "User:ANONYMOUS"]);
    create_user(&broker, "alice", "secret");
    let mut admin = Raw::connect(broker.port);
    for t in ["orders", "pre-1", "secret"] {
        let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(t.into())))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let r: CreateTopicsResponse = admin.call(ApiKey::CreateTopics, 7, &req, 7);
        assert_eq!(r.topics[0].error_code, 0);
    }
    let alice = || {
        let mut s = TcpStream::connect(("127.0.0.1", sasl)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(plain_login(&mut s, "alice", "secret").unwrap().error_code, 0);
        s
    };
    let mut a = alice();
    // Nothing granted: produce TOPIC_AUTHORIZATION_FAILED (29), the topic absent from Metadata
    // and refused by name, a group GROUP_AUTHORIZATION_FAILED (30), topic creation 29, the
    // cluster CLUSTER_AUTHORIZATION_FAILED (31), an idempotent producer id 31.
    assert_eq!(produce_code(&mut a, "orders"), 29);
    assert_eq!(metadata_topics(&mut a, None), vec![]);
    assert_eq!(metadata_topics(&mut a, Some(&["orders"])), vec![("orders".to_string(), 29)]);
    let join: JoinGroupResponse = call(
        &mut a,
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer")),
    )
    .unwrap();
    assert_eq!(join.error_code, 30);
    let created: CreateTopicsResponse = call(
        &mut a,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("mine")))
            .with_num_partitions(1)
            .with_replication_factor(1)]),
    )
    .unwrap();
    assert_eq!(created.topics[0].error_code, 29);
    // Anyone may describe the cluster (as in Kafka), told only the operations it may do there;
    // the log directories need DESCRIBE on it.
    let cluster: DescribeClusterResponse =
        call(&mut a, ApiKey::DescribeCluster, 0, &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true)).unwrap();
    assert_eq!((cluster.error_code, cluster.cluster_authorized_operations), (0, 0));
    let dirs: DescribeLogDirsResponse = call(&mut a, ApiKey::DescribeLogDirs, 4, &DescribeLogDirsRequest::default()).unwrap();
    assert_eq!(dirs.error_code, 31);
    let pid: InitProducerIdResponse = call(&mut a, ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1)).unwrap();
    assert_eq!(pid.error_code, 31);

    // WRITE on orders, and READ on every topic starting "pre-" (which implies DESCRIBE); a
    // DENY on "secret" beats an ALLOW for everyone on every topic.
    assert_eq!(create_acl(&mut admin, 2, "orders", 3, "User:alice", 4, 3), 0);
    assert_eq!(create_acl(&mut admin, 2, "pre-", 4, "User:alice", 3, 3), 0);
    assert_eq!(create_acl(&mut admin, 2, "*", 3, "User:*", 8, 3), 0);
    assert_eq!(create_acl(&mut admin, 2, "secret", 3, "User:alice", 8, 2), 0);
    // Refused bindings: a PREFIXED wildcard, a cluster not named kafka-cluster (INVALID_REQUEST).
    assert_eq!(create_acl(&mut admin, 2, "*", 4, "User:alice", 3, 3), 42);
    assert_eq!(create_acl(&mut admin, 4, "mycluster", 3, "User:alice", 8, 3), 42);
    assert_eq!(produce_code(&mut a, "orders"), 0);
    assert_eq!(produce_code(&mut a, "pre-1"), 29, "READ does not give WRITE");
    assert_eq!(metadata_topics(&mut a, None), vec![("orders".to_string(), 0), ("pre-1".to_string(), 0)]);
    assert_eq!(metadata_topics(&mut a, Some(&["secret"])), vec![("secret".to_string(), 29)]);
    // WRITE on a topic is enough for an idempotent producer (Kafka's "WRITE on any topic").
    let pid: InitProducerIdResponse = call(&mut a, ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1)).unwrap();
    assert_eq!(pid.error_code, 0);
    // Alice may not manage ACLs or users.
    let d: DescribeAclsResponse = call(
        &mut a,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default().with_resource_type_filter(1).with_pattern_type_filter(1).with_operation(1).with_permission_type(1),
    )
    .unwrap();
    assert_eq!(d.error_code, 31);

    // DescribeAcls with a MATCH filter: every binding that applies to "pre-1".
    let d: DescribeAclsResponse = admin.call(
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(StrBytes::from_static_str("pre-1")))
            .with_pattern_type_filter(2)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1),
        3,
    );
    let mut names: Vec<String> = d.resources.iter().map(|r| r.resource_name.to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["*", "pre-"]);

    // The ACLs are durable: after kill -9 they hold as before.
    broker.restart();
    let mut a = alice();
    assert_eq!(produce_code(&mut a, "orders"), 0);
    assert_eq!(metadata_topics(&mut a, Some(&["secret"])), vec![("secret".to_string(), 29)]);
    // DeleteAcls answers what it removed; then orders is closed to alice again.
    let mut admin = Raw::connect(broker.port);
    let del: DeleteAclsResponse = admin.call(
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![kafka_protocol::messages::delete_acls_request::DeleteAclsFilter::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(StrBytes::from_static_str("orders")))
            .with_pattern_type_filter(3)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1)]),
        3,
    );
    assert_eq!(del.filter_results[0].error_code, 0);
    assert_eq!(del.filter_results[0].matching_acls.len(), 1);
    assert_eq!(produce_code(&mut a, "orders"), 29);
    let metrics = broker.metrics();
    assert!(metrics.lines().any(|l| l.starts_with("spate_authorization_denials_total{") && l.contains("resource_type=\"Topic\"")), "denials counted");
}

/// A request frame from client id `client`.
fn frame_from<Q: Encodable>(client: &str, key: ApiKey, version: i16, corr: i32, req: &Q) -> Vec<u8> {
    let mut body = BytesMut::new();
    let h = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_string(client.into())));
    h.encode(&mut body, key.request_header_version(version)).unwrap();
    req.encode(&mut body, version).unwrap();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out
}

/// Produces `payload`-byte records to partition 0 of `topic` as `client`, one request at a time
/// (acks=1), for `run`: (bytes acknowledged after `warm_up`, the seconds after it, the largest
/// throttle_time_ms answered).
fn produce_for(port: u16, client: &str, topic: &str, payload: usize, warm_up: Duration, run: Duration) -> (usize, f64, i32) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_000,
        key: None,
        value: Some(vec![b'q'; payload].into()),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(&mut batch, &[record], &RecordEncodeOptions { version: 2, compression: Compression::None }).unwrap();
    let req = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze()))])]);
    let f = frame_from(client, ApiKey::Produce, 9, 1, &req);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let (mut bytes, mut max_throttle) = (0, 0);
    while start.elapsed() < run {
        s.write_all(&f).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let mut b = bytes::Bytes::from(buf);
        ResponseHeader::decode(&mut b, ApiKey::Produce.response_header_version(9)).unwrap();
        let r = ProduceResponse::decode(&mut b, 9).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        max_throttle = max_throttle.max(r.throttle_time_ms);
        if start.elapsed() > warm_up {
            bytes += f.len();
        }
    }
    (bytes, (start.elapsed() - warm_up).as_secs_f64(), max_throttle)
}

#[test]
fn a_producer_over_its_quota_is_slowed_to_it_and_others_are_not() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    for t in ["slow", "fast"] {
        let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(t.into())))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let r: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 7, &req, 7);
        assert_eq!(r.topics[0].error_code, 0);
    }
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    let quota = |client: Option<&str>, key: &str, value: f64| {
        EntryData::default()
            .with_entity(vec![EntityData::default().with_entity_type(StrBytes::from_static_str("client-id")).with_entity_name(client.map(|c| StrBytes::from_string(c.into())))])
            .with_ops(vec![OpData::default().with_key(StrBytes::from_string(key.into())).with_value(value)])
    };
    // 50 KB/s for client "throttled"; an unknown key and a negative rate are refused.
    let alter = AlterClientQuotasRequest::default().with_entries(vec![
        quota(Some("throttled"), "producer_byte_rate", 50_000.0),
        quota(Some("x"), "bogus_rate", 1.0),
        quota(Some("y"), "producer_byte_rate", -1.0),
    ]);
    let r: AlterClientQuotasResponse = raw.call(ApiKey::AlterClientQuotas, 1, &alter, 1);
    assert_eq!(r.entries.iter().map(|e| e.error_code).collect::<Vec<_>>(), vec![0, 42, 42]);
    let d: DescribeClientQuotasResponse = raw.call(ApiKey::DescribeClientQuotas, 1, &DescribeClientQuotasRequest::default(), 1);
    let entries = d.entries.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].values[0].key.as_str(), entries[0].values[0].value), ("producer_byte_rate", 50_000.0));

    // Both run at once for 10 s; the throttled one is measured after its first 3 s (the rate is
    // measured over up to 11 s, so a client's first second at full speed counts until then).
    let port = broker.port;
    let fast = std::thread::spawn(move || produce_for(port, "unlimited", "fast", 5_000, Duration::from_secs(3), Duration::from_secs(10)));
    let (bytes, secs, throttle) = produce_for(port, "throttled", "slow", 5_000, Duration::from_secs(3), Duration::from_secs(10));
    let (fast_bytes, fast_secs, fast_throttle) = fast.join().unwrap();
    let rate = bytes as f64 / secs;
    eprintln!("throttled client: {rate:.0} B/s (quota 50000), largest throttle {throttle} ms; unlimited client: {:.0} B/s", fast_bytes as f64 / fast_secs);
    assert!(rate <= 55_000.0, "the throttled client ran at {rate:.0} B/s, over its quota of 50,000 by more than 10%");
    // 50 KB/s is far below what any machine does: a slower one means a throttle gone wrong.
    assert!(rate >= 40_000.0, "the throttled client ran at only {rate:.0} B/s");
    assert!(throttle > 0, "the throttled client was told to wait");
    assert_eq!(fast_throttle, 0, "the unlimited client was never throttled");
    assert!(broker.metrics().lines().any(|l| l.starts_with("spate_quota_throttles_total{") && l.contains("Produce")));
}

#[test]
fn a_client_certificate_names_the_principal_by_the_mapping_rules() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.client_cert("alice", "/O=Team A/CN=Alice");
    pki.client_cert("mallory", "/O=Elsewhere/CN=Mallory");
    pki.client_cert("nameless", "/O=Team A");
    let (ssl, sasl) = (free_port(), free_port());
    let ca = pki.path("ca.pem");
    // CN lower-cased for Team A; no rule for anyone else (refused in the handshake's wake).
    let broker = security_broker(
        &pki,
        ssl,
        sasl,
        &[
            "--ssl-ca-file",
            &ca,
            "--ssl-client-auth",
            "required",
            "--ssl-principal-mapping-rules",
            "RULE:^CN=([^,]+),O=Team A$/$1/L,RULE:^CN=Mallory,.*$/mallory/",
            "--authorizer",
            "acl",
            "--super-users",
            "User:ANONYMOUS",
        ],
    );
    let mut admin = Raw::connect(broker.port);
    let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![kafka_protocol::messages::create_topics_request::CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("certs")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = admin.call(ApiKey::CreateTopics, 7, &req, 7);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(create_acl(&mut admin, 2, "certs", 3, "User:alice", 4, 3), 0);
    let mut alice = tls_connect(&tls_client_with_cert(&pki, "alice"), ssl).expect("alice's handshake");
    assert_eq!(produce_code(&mut alice, "certs"), 0, "User:alice may write");
    let mut mallory = tls_connect(&tls_client_with_cert(&pki, "mallory"), ssl).expect("mallory's handshake");
    assert_eq!(produce_code(&mut mallory, "certs"), 29, "User:mallory may not");
    // No rule applies to a subject without CN: the connection is closed.
    let mut nameless = tls_connect(&tls_client_with_cert(&pki, "nameless"), ssl);
    if let Ok(s) = nameless.as_mut() {
        assert!(call::<_, _, ApiVersionsResponse>(s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).is_none());
    }
    // Without a certificate the handshake fails.
    assert!(tls_connect(&tls_client(&pki), ssl).and_then(|mut s| {
        s.write_all(&frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default()))?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)
    })
    .is_err());
    assert!(broker.log().contains("No rules apply to"), "{}", broker.log());
}

/// `GET path` on the admin port, over TLS when `tls` is given, with `token` as a bearer token:
/// the status line and the body.
fn admin_get(port: u16, tls: Option<&Arc<rustls::ClientConfig>>, path: &str, token: Option<&str>) -> (String, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default()
    );
    let mut text = String::new();
    match tls {
        Some(config) => {
            let mut s = tls_connect(config, port).expect("admin TLS handshake");
            s.write_all(request.as_bytes()).unwrap();
            // The server closes after its answer, without close_notify: read what came.
            let _ = s.read_to_string(&mut text);
        }
        None => {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s.read_to_string(&mut text).unwrap();
        }
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

#[test]
fn the_admin_port_can_require_a_token_and_serve_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let broker = Broker::start(&["--admin-listen", &admin, "--admin-tls", "true", "--ssl-cert-file", &cert, "--ssl-key-file", &key]);
    let config = tls_client(&pki);
    let (status, body) = admin_get(admin_port, Some(&config), "/metrics", None);
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("spate_"), "metrics over HTTPS");
    drop(broker);

    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    // (An operator gives the token by SPATE_ADMIN_TOKEN; a test's environment is shared by the
    // brokers of every test, so the flag here.)
    let _broker = Broker::start(&["--admin-listen", &admin, "--admin-token", "s3cret-token"]);
    assert!(admin_get(admin_port, None, "/metrics", None).0.contains("401"));
    assert!(admin_get(admin_port, None, "/metrics", Some("wrong")).0.contains("401"));
    let (status, body) = admin_get(admin_port, None, "/metrics", Some("s3cret-token"));
    assert!(status.contains("200") && body.contains("spate_"), "{status}");
    assert!(admin_get(admin_port, None, "/v1/status", None).0.contains("401"));
    // The probes stay open.
    assert!(admin_get(admin_port, None, "/v1/health", None).0.contains("200"));
    assert!(admin_get(admin_port, None, "/v1/ready", None).0.contains("200"));
}
