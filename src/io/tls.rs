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

/// The acceptor for a new connection, from the current configuration (None: no TLS set up).
pub fn acceptor() -> Option<TlsAcceptor> {
    CURRENT.read().expect("TLS config lock").clone().map(TlsAcceptor::from)
}
