//! TLS for the SSL and SASL_SSL listeners: rustls (TLS 1.2 and 1.3, ring's algorithms) over
//! glommio's stream, with the certificate, key and client CA read from PEM files and read again
//! when any of them changes, so a renewed certificate is served without a restart.
//!
//! One server configuration serves every core: cores take an `Arc` of the current one for each
//! handshake ([`acceptor`]); [`reload_if_changed`], called by core 0's housekeeping, builds a new
//! one when a file's modification time or size changed, and keeps the old one (with a log line)
//! when the new files do not make a valid configuration, so a half-written renewal never takes
//! the listener down. Connections keep the configuration they were accepted with.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::security::{ClientAuth, TlsSettings};

/// What identifies a version of the files: each one's modification time and length.
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Current {
    settings: TlsSettings,
    config: Arc<ServerConfig>,
    stamp: Stamp,
}

static CURRENT: RwLock<Option<Arc<ServerConfig>>> = RwLock::new(None);
static LOADED: Mutex<Option<Current>> = Mutex::new(None);

fn stamp(settings: &TlsSettings) -> Stamp {
    let files = [Some(&settings.cert_file), Some(&settings.key_file), settings.ca_file.as_ref()];
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f.as_ref()?).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// ring's algorithms: rustls 0.23.48 deprecates them for having no post-quantum key exchange
/// (aws-lc-rs has one, at the build cost in Cargo.toml's note); TLS 1.3 with X25519 and the
/// usual suites stays what Kafka's JVM clients negotiate.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{what} {}: no PEM certificate in it", path.display());
    Ok(certs)
}

/// Builds the server configuration from the files, checking that they make one.
pub fn build(settings: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(&settings.cert_file, "ssl_cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| anyhow::anyhow!("ssl_key_file {}: {e}", settings.key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?;
    let builder = match (&settings.ca_file, settings.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(ca), auth) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "ssl_ca_file")? {
                roots.add(c).map_err(|e| anyhow::anyhow!("ssl_ca_file {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| anyhow::anyhow!("ssl_ca_file {}: {e}", ca.display()))?)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("ssl_cert_file/ssl_key_file: {e}"))?;
    Ok(Arc::new(config))
}

/// Loads the files at start (main thread): an error stops the start.
pub fn init(settings: &TlsSettings) -> anyhow::Result<()> {
    let stamp = stamp(settings);
    let config = build(settings)?;
    *CURRENT.write().expect("TLS config lock") = Some(config.clone());
    *LOADED.lock().expect("TLS config lock") = Some(Current { settings: settings.clone(), config, stamp });
    tracing::info!(cert = %settings.cert_file.display(), client_auth = settings.client_auth.name(), "TLS certificate loaded");
    Ok(())
}

/// Rebuilds the configuration when a file changed. Returns whether a new one is in use.
pub fn reload_if_changed() -> bool {
    let mut loaded = LOADED.lock().expect("TLS config lock");
    let Some(cur) = loaded.as_mut() else { return false };
    let now = stamp(&cur.settings);
    if now == cur.stamp {
        return false;
    }
    cur.stamp = now;
    match build(&cur.settings) {
        Ok(config) => {
            cur.config = config.clone();
            *CURRENT.write().expect("TLS config lock") = Some(config);
            tracing::info!(cert = %cur.settings.cert_file.display(), "TLS files changed: new connections get the new certificate");
            crate::metrics::tls_reload(true);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "TLS files changed but do not make a valid configuration; still serving the previous one");
            crate::metrics::tls_reload(false);
            false
        }
    }
}

/// The current server configuration (None: no TLS set up).
pub fn current() -> Option<Arc<ServerConfig>> {
    CURRENT.read().expect("TLS config lock").clone()
}

/// The acceptor for a new connection, from the current configuration (None: no TLS set up).
pub fn acceptor() -> Option<TlsAcceptor> {
    CURRENT.read().expect("TLS config lock").clone().map(TlsAcceptor::from)
}

/// The subject of a client's certificate (DER) as Kafka names a mutual-TLS client: Java's
/// `X500Principal.getName()`, RFC 2253. The RDNs from the last encoded to the first (most
/// specific first: `CN=alice,OU=eng,O=Team A,C=US`), a multi-valued RDN's values joined by `+`;
/// CN, C, L, ST, O, OU, STREET, DC and UID by keyword, other attributes (emailAddress, SN,
/// serialNumber...) as `dotted.oid=#` and the hex of the value's DER; in values, `,` `=` `+` `<`
/// `>` `#` `;` `"` `\` and leading or trailing spaces (and carriage returns) take a backslash and
/// NUL is `\00`. String values are decoded by their type, as Java 25 does (UTF8String as UTF-8,
/// BMPString as UTF-16, the 8-bit types as Latin-1; Java 17 decodes every type as UTF-8, which
/// only differs for non-ASCII text in the deprecated TeletexString and BMPString). A
/// string value of another type is written as hex too. The values of a multi-valued RDN come in
/// DER's order (the only one a DER encoding may have; Java keeps a non-DER encoding's). None
/// when the certificate does not parse (x509-cert knows no UniversalString, for one).
pub fn subject_dn(cert_der: &[u8]) -> Option<String> {
    use std::fmt::Write;
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::der::oid::db::rfc4519 as at;
    use x509_cert::der::{Decode, Encode, Tag, Tagged};

    fn value_text(ava: &AttributeTypeAndValue) -> Option<String> {
        let bytes = ava.value.value();
        Some(match ava.value.tag() {
            Tag::Utf8String => String::from_utf8_lossy(bytes).into_owned(),
            Tag::PrintableString | Tag::TeletexString | Tag::Ia5String | Tag::GeneralString => bytes.iter().map(|&b| b as char).collect(),
            Tag::BmpString => {
                let units = bytes.chunks(2).map(|u| if u.len() == 2 { u16::from_be_bytes([u[0], u[1]]) } else { 0xFFFD });
                char::decode_utf16(units).map(|c| c.unwrap_or('\u{FFFD}')).collect()
            }
            _ => return None,
        })
    }

    // Java's `AVA.toRFC2253String`: escape, then escape the leading and trailing spaces of that.
    fn escaped(value: &str) -> String {
        let mut chars = Vec::with_capacity(value.len());
        for c in value.chars() {
            match c {
                ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => chars.extend(['\\', c]),
                '\0' => chars.extend(['\\', '0', '0']),
                c => chars.push(c),
            }
        }
        let blank = |c: &char| *c == ' ' || *c == '\r';
        let lead = chars.iter().position(|c| !blank(c)).unwrap_or(chars.len());
        let trail = chars.iter().rposition(|c| !blank(c));
        let mut out = String::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if i < lead || trail.is_none_or(|t| i > t) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    fn ava_text(ava: &AttributeTypeAndValue) -> Option<String> {
        const KEYWORDS: [(x509_cert::der::oid::ObjectIdentifier, &str); 9] = [
            (at::CN, "CN"),
            (at::C, "C"),
            (at::L, "L"),
            (at::ST, "ST"),
            (at::O, "O"),
            (at::OU, "OU"),
            (at::STREET, "STREET"),
            (at::DC, "DC"),
            (at::UID, "UID"),
        ];
        let keyword = KEYWORDS.iter().find(|(oid, _)| *oid == ava.oid).map(|(_, k)| *k);
        if let (Some(keyword), Some(text)) = (keyword, value_text(ava)) {
            return Some(format!("{keyword}={}", escaped(&text)));
        }
        let mut out = match keyword {
            Some(k) => format!("{k}=#"),
            None => format!("{}=#", ava.oid),
        };
        for b in ava.value.to_der().ok()? {
            let _ = write!(out, "{b:02x}");
        }
        Some(out)
    }

    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.tbs_certificate().subject().iter_rdn() {
        rdns.push(rdn.iter().map(ava_text).collect::<Option<Vec<_>>>()?.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::subject_dn;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A certificate for `subject` (openssl's `-subj` syntax) signed by the test CA; its subject
    /// as `subject_dn` writes it.
    fn dn(dir: &Path, name: &str, args: &[&str]) -> Option<String> {
        let pem = format!("{name}.pem");
        let mut all = vec!["req", "-new", "-x509", "-key", "leaf.key", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "1", "-out", &pem];
        all.extend(args);
        openssl(dir, &all);
        subject_dn(CertificateDer::from_pem_file(dir.join(&pem)).unwrap().as_ref())
    }

    /// Each expected name is what Java printed for the same certificate
    /// (`CertificateFactory`, `getSubjectX500Principal().getName()`), on Java 17 and on Java 25
    /// unless said otherwise.
    #[test]
    fn subject_as_java_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.key"]);
        openssl(d, &["req", "-new", "-x509", "-key", "ca.key", "-days", "1", "-out", "ca.pem", "-subj", "/CN=Test CA"]);
        std::fs::write(d.join("nombstr.cnf"), "[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n").unwrap();
        std::fs::write(d.join("bmp.cnf"), "[req]\ndistinguished_name=dn\nstring_mask=MASK:0x800\n[dn]\n").unwrap();
        let cases: [(&str, &[&str], &str); 14] = [
            ("basic", &["-subj", "/C=US/O=Team A/OU=eng/CN=alice"], "CN=alice,OU=eng,O=Team A,C=US"),
            ("comma", &["-subj", r"/CN=Doe\, John"], r"CN=Doe\, John"),
            (
                "email",
                &["-subj", "/CN=alice/emailAddress=alice@example.com"],
                "1.2.840.113549.1.9.1=#1611616c696365406578616d706c652e636f6d,CN=alice",
            ),
            ("multi", &["-multivalue-rdn", "-subj", "/CN=a+UID=b"], "CN=a+UID=b"),
            ("multi2", &["-multivalue-rdn", "-subj", "/UID=b+CN=a/O=x+OU=y+C=US"], "O=x+OU=y+C=US,CN=a+UID=b"),
            (
                "special",
                &["-subj", r#"/CN= #lead=eq\+plus;semi<lt>gt"quote\\back\, trail /O=#hash/OU=  two  "#],
                r#"OU=\ \ two\ \ ,O=\#hash,CN=\ \#lead\=eq\+plus\;semi\<lt\>gt\"quote\\back\, trail\ "#,
            ),
            ("dc", &["-subj", "/DC=com/DC=example/CN=svc"], "CN=svc,DC=example,DC=com"),
            (
                "others",
                &[
                    "-subj",
                    "/C=US/ST=California/L=San Francisco/street=1 Main St/O=Org/OU=Unit/UID=jdoe/SN=Doe/GN=John/title=Boss/serialNumber=1234/CN=john",
                ],
                "CN=john,2.5.4.5=#130431323334,2.5.4.12=#0c04426f7373,2.5.4.42=#0c044a6f686e,2.5.4.4=#0c03446f65,\
                 UID=jdoe,OU=Unit,O=Org,STREET=1 Main St,L=San Francisco,ST=California,C=US",
            ),
            ("utf8", &["-utf8", "-subj", "/CN=Zoë Ünïcødé/O=日本/OU=😀"], "OU=😀,O=日本,CN=Zoë Ünïcødé"),
            ("spaces", &["-subj", "/CN=   /O= /OU=a b"], r"OU=a b,O=\ ,CN=\ \ \ "),
            ("controls", &["-subj", "/CN=a\tb/O=ab\r/OU=\ra"], "OU=\\\ra,O=ab\\\r,CN=a\tb"),
            // TeletexString (Latin-1) and BMPString: Java 25's names; Java 17 decodes them as
            // UTF-8 (`O=Zo\u{FFFD}`, and NULs between BMP's characters).
            ("t61", &["-config", "nombstr.cnf", "-utf8", "-subj", "/CN=a@b_c/O=Zoë"], "O=Zoë,CN=a@b_c"),
            ("bmp", &["-config", "bmp.cnf", "-utf8", "-subj", "/CN=Zoë, 日本"], r"CN=Zoë\, 日本"),
            // No subject at all (Java takes it with a critical subjectAltName).
            ("empty", &["-subj", "/", "-addext", "subjectAltName=critical,DNS:client.example"], ""),
        ];
        for (name, args, java) in cases {
            assert_eq!(dn(d, name, args).as_deref(), Some(java), "{name}");
        }
    }

    #[test]
    fn not_a_certificate() {
        assert_eq!(subject_dn(b""), None);
        assert_eq!(subject_dn(b"\x30\x03\x02\x01\x01"), None);
    }
}
