//! The security part of the settings: Kafka's listeners with their security protocols, the TLS
//! files and client-certificate policy, and the SASL mechanisms, parsed and checked against each
//! other at start (a listener needing TLS without a certificate is refused, naming the setting).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Kafka's security protocols, which here are also the listeners' names (Kafka's default
/// `listener.security.protocol.map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] =
        [SecurityProtocol::Plaintext, SecurityProtocol::Ssl, SecurityProtocol::SaslPlaintext, SecurityProtocol::SaslSsl];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn from_name(s: &str) -> Option<SecurityProtocol> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether connections start with a TLS handshake.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One listener: where every core accepts its connections, how they are secured, and the address
/// clients are told (Metadata answers a client with the brokers' addresses on the listener it
/// came in by, as Kafka does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

impl ListenerConfig {
    pub fn name(&self) -> &'static str {
        self.protocol.name()
    }

    /// `NAME://host:port` as advertised (Kafka's `advertised.listeners` entry).
    pub fn advertised(&self) -> String {
        format!("{}://{}:{}", self.name(), self.advertised_host, self.advertised_port)
    }
}

/// `ssl_client_auth`: whether TLS clients must (or may) present a certificate signed by
/// `ssl_ca_file` (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> anyhow::Result<ClientAuth> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            _ => anyhow::bail!("ssl_client_auth: expected none, requested or required, got {s:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

/// The TLS settings, present when some listener is SSL or SASL_SSL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates client certificates are checked against.
    pub ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// SASL mechanisms Spate serves.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Parses `listeners` / `advertised_listeners`: `NAME://host:port` entries separated by commas,
/// the name a security protocol, each at most once. An empty host (`PLAINTEXT://:9092`) means
/// every interface. `key` names the setting in errors.
pub fn parse_listener_list(s: &str, key: &str) -> anyhow::Result<Vec<(SecurityProtocol, String, u16)>> {
    let mut out: Vec<(SecurityProtocol, String, u16)> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("{key}: expected NAME://host:port, got {entry:?}"))?;
        let protocol = SecurityProtocol::from_name(name).ok_or_else(|| {
            anyhow::anyhow!("{key}: unknown listener name {name:?} in {entry:?} (one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
        })?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("{key}: expected NAME://host:port, got {entry:?}"))?;
        let port: u16 = port.parse().map_err(|_| anyhow::anyhow!("{key}: bad port in {entry:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        anyhow::ensure!(
            !out.iter().any(|(p, _, _)| *p == protocol),
            "{key}: listener {} given twice (each security protocol names one listener)",
            protocol.name()
        );
        out.push((protocol, host, port));
    }
    anyhow::ensure!(!out.is_empty(), "{key}: no listener given");
    Ok(out)
}

/// The listeners from `listeners` (or the one plaintext `listen`) and `advertised_listeners`
/// (or `advertised_listener` for the first). The first listener is the one brokers use between
/// themselves; a listener without an advertised address advertises its bind address.
pub fn listeners(
    listen: SocketAddr,
    listeners: Option<&str>,
    advertised_first: Option<(String, u16)>,
    advertised: Option<&str>,
) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut out = Vec::new();
    match listeners {
        None => out.push(ListenerConfig {
            protocol: SecurityProtocol::Plaintext,
            bind: listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
        }),
        Some(s) => {
            for (protocol, host, port) in parse_listener_list(s, "listeners")? {
                let ip: IpAddr = if host.is_empty() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    host.parse().map_err(|_| {
                        anyhow::anyhow!("listeners: {host:?} is not an IP address (a listener binds an address; names go in advertised_listeners)")
                    })?
                };
                out.push(ListenerConfig { protocol, bind: SocketAddr::new(ip, port), advertised_host: ip.to_string(), advertised_port: port });
            }
        }
    }
    if let Some((host, port)) = advertised_first {
        out[0].advertised_host = host;
        out[0].advertised_port = port;
    }
    if let Some(s) = advertised {
        for (protocol, host, port) in parse_listener_list(s, "advertised_listeners")? {
            let l = out.iter_mut().find(|l| l.protocol == protocol).ok_or_else(|| {
                anyhow::anyhow!("advertised_listeners: {} is not one of the listeners", protocol.name())
            })?;
            anyhow::ensure!(!host.is_empty(), "advertised_listeners: empty host for {}", protocol.name());
            l.advertised_host = host;
            l.advertised_port = port;
        }
    }
    let mut binds: Vec<SocketAddr> = out.iter().map(|l| l.bind).filter(|a| a.port() != 0).collect();
    binds.sort();
    anyhow::ensure!(
        binds.windows(2).all(|w| w[0].port() != w[1].port()),
        "listeners: two listeners on one port"
    );
    Ok(out)
}

/// The TLS settings, required when a listener uses TLS and refused as pointless otherwise.
pub fn tls_settings(
    listeners: &[ListenerConfig],
    admin_tls: bool,
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
    client_auth: &str,
) -> anyhow::Result<Option<TlsSettings>> {
    let client_auth = ClientAuth::parse(client_auth)?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty()).map(PathBuf::from);
    let (cert, key, ca) = (nonempty(cert), nonempty(key), nonempty(ca));
    let user = match listeners.iter().find(|l| l.protocol.tls()) {
        Some(l) => format!("listener {}", l.name()),
        None if admin_tls => "admin_tls".to_string(),
        None => {
            anyhow::ensure!(
                cert.is_none() && key.is_none(),
                "ssl_cert_file/ssl_key_file are set but no listener is SSL or SASL_SSL (see listeners) and admin_tls is off"
            );
            return Ok(None);
        }
    };
    let (Some(cert_file), Some(key_file)) = (cert, key) else {
        anyhow::bail!("{user} needs ssl_cert_file and ssl_key_file (PEM)");
    };
    anyhow::ensure!(
        client_auth == ClientAuth::None || ca.is_some(),
        "ssl_client_auth = {} needs ssl_ca_file (the CA client certificates are checked against)",
        client_auth.name()
    );
    Ok(Some(TlsSettings { cert_file, key_file, ca_file: ca, client_auth }))
}

/// `sasl_enabled_mechanisms`: a comma-separated subset of [`SASL_MECHANISMS`].
pub fn sasl_mechanisms(s: &str) -> anyhow::Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let known = SASL_MECHANISMS
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(m))
            .ok_or_else(|| anyhow::anyhow!("sasl_enabled_mechanisms: {m:?} is not one of {}", SASL_MECHANISMS.join(", ")))?;
        if !out.contains(&known) {
            out.push(known);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:9092".parse().unwrap()
    }

    #[test]
    fn one_plaintext_listener_by_default() {
        let l = listeners(listen(), None, None, None).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[0].advertised(), "PLAINTEXT://127.0.0.1:9092");
        let l = listeners(listen(), None, Some(("b1.example".into(), 19092)), None).unwrap();
        assert_eq!(l[0].advertised(), "PLAINTEXT://b1.example:19092");
    }

    #[test]
    fn several_listeners_and_their_advertised_addresses() {
        let l = listeners(
            listen(),
            Some("PLAINTEXT://127.0.0.1:9092, SASL_SSL://:9094,ssl://[::1]:9093"),
            None,
            Some("SASL_SSL://kafka.example:19094"),
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].bind, "0.0.0.0:9094".parse().unwrap());
        assert_eq!(l[1].advertised(), "SASL_SSL://kafka.example:19094");
        assert_eq!(l[2].protocol, SecurityProtocol::Ssl);
        assert_eq!(l[2].bind, "[::1]:9093".parse().unwrap());
    }

    #[test]
    fn bad_listeners_are_refused_by_name() {
        let e = |s: &str| listeners(listen(), Some(s), None, None).unwrap_err().to_string();
        assert!(e("FOO://127.0.0.1:1").contains("unknown listener name"));
        assert!(e("127.0.0.1:1").contains("NAME://host:port"));
        assert!(e("PLAINTEXT://a:1,PLAINTEXT://b:2").contains("given twice"));
        assert!(e("PLAINTEXT://localhost:1").contains("not an IP address"));
        assert!(e("PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:1").contains("two listeners on one port"));
        assert!(e("").contains("no listener"));
        let e = listeners(listen(), None, None, Some("SSL://h:1")).unwrap_err().to_string();
        assert!(e.contains("not one of the listeners"), "{e}");
    }

    #[test]
    fn tls_files_are_required_exactly_when_a_listener_uses_tls() {
        let plain = listeners(listen(), None, None, None).unwrap();
        assert_eq!(tls_settings(&plain, false, None, None, None, "none").unwrap(), None);
        assert!(tls_settings(&plain, false, Some("c".into()), Some("k".into()), None, "none").is_err());
        let ssl = listeners(listen(), Some("SSL://127.0.0.1:9093"), None, None).unwrap();
        assert!(tls_settings(&ssl, false, None, None, None, "none").unwrap_err().to_string().contains("ssl_cert_file"));
        assert!(tls_settings(&ssl, false, Some("c".into()), Some("k".into()), None, "required").unwrap_err().to_string().contains("ssl_ca_file"));
        let t = tls_settings(&ssl, false, Some("c".into()), Some("k".into()), Some("ca".into()), "Requested").unwrap().unwrap();
        assert_eq!(t.client_auth, ClientAuth::Requested);
        assert!(tls_settings(&ssl, false, Some("c".into()), Some("k".into()), None, "maybe").is_err());
    }

    #[test]
    fn sasl_mechanisms_are_checked() {
        assert_eq!(sasl_mechanisms("scram-sha-256, PLAIN,PLAIN").unwrap(), vec!["SCRAM-SHA-256", "PLAIN"]);
        assert!(sasl_mechanisms("GSSAPI").unwrap_err().to_string().contains("GSSAPI"));
        assert!(sasl_mechanisms("").unwrap().is_empty());
    }
}
