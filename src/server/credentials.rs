//! The SCRAM credential store every SASL mechanism checks: salted, hashed keys per user and
//! mechanism (never a password), part of the metadata image so every core reads the same one.
//!
//! Durable like the rest of the metadata: a single node keeps it in
//! `<data_dir>/scram-credentials.json`, replaced atomically by core 0 before the new image is
//! published; a cluster keeps it in the metadata log (`MetadataRecord::ScramCredential`), so it
//! is replicated to every broker. Changed with AlterUserScramCredentials (`spate user`,
//! `kafka-configs --alter --add-config SCRAM-SHA-256=[...]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::controller::metadata::StoredScramCredential;
use crate::io::fs;
use crate::protocol::sasl::{ScramCredential, ScramMechanism};

/// Every user's credentials, by mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

/// One change asked for by AlterUserScramCredentials: a credential set (`Some`) or removed.
#[derive(Debug, Clone)]
pub struct CredentialChange {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub credential: Option<ScramCredential>,
}

impl Credentials {
    pub fn get(&self, user: &str, m: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&m)
    }

    /// SASL/PLAIN: whether `password` is the user's, checked against its SCRAM-SHA-256
    /// credential, else its SCRAM-SHA-512 one.
    pub fn verify_plain(&self, user: &str, password: &[u8]) -> bool {
        let Some(creds) = self.users.get(user) else { return false };
        ScramMechanism::ALL.into_iter().find_map(|m| creds.get(&m).map(|c| c.verifies(m, password))).unwrap_or(false)
    }

    pub fn users(&self) -> impl Iterator<Item = (&String, &BTreeMap<ScramMechanism, ScramCredential>)> {
        self.users.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Applies changes already checked (see `Shard::alter_credentials`).
    pub fn apply(&mut self, changes: &[CredentialChange]) {
        for c in changes {
            match &c.credential {
                Some(cred) => {
                    self.users.entry(c.user.clone()).or_default().insert(c.mechanism, cred.clone());
                }
                None => {
                    if let Some(u) = self.users.get_mut(&c.user) {
                        u.remove(&c.mechanism);
                        if u.is_empty() {
                            self.users.remove(&c.user);
                        }
                    }
                }
            }
        }
    }

    /// From the cluster's metadata (credentials of a mechanism this build does not know are
    /// skipped with a log line).
    pub fn from_cluster(stored: &BTreeMap<String, BTreeMap<String, StoredScramCredential>>) -> Credentials {
        let mut out = Credentials::default();
        for (user, by_mech) in stored {
            for (mech, c) in by_mech {
                let Some(m) = ScramMechanism::from_name(mech) else {
                    tracing::warn!(user, mechanism = mech, "SCRAM credential of an unknown mechanism ignored");
                    continue;
                };
                let cred = ScramCredential {
                    salt: c.salt.clone(),
                    iterations: c.iterations,
                    stored_key: c.stored_key.clone(),
                    server_key: c.server_key.clone(),
                };
                out.users.entry(user.clone()).or_default().insert(m, cred);
            }
        }
        out
    }
}

/// The cluster's form of one credential.
pub fn stored(c: &ScramCredential) -> StoredScramCredential {
    StoredScramCredential { salt: c.salt.clone(), iterations: c.iterations, stored_key: c.stored_key.clone(), server_key: c.server_key.clone() }
}

/// A single node's credential file.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("scram-credentials.json")
}

pub fn encode(c: &Credentials) -> Vec<u8> {
    serde_json::to_vec_pretty(c).expect("credentials always serialise")
}

/// Reads a single node's credentials (main thread, before the cores start).
pub fn load(data_dir: &Path) -> anyhow::Result<Credentials> {
    let f = file(data_dir);
    let Some(text) = fs::read_to_string_sync(&f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))? else {
        return Ok(Credentials::default());
    };
    let c: Credentials = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
    tracing::info!(users = c.users.len(), file = %f.display(), "SCRAM credentials loaded");
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_either_mechanism_and_changes_apply() {
        let mut c = Credentials::default();
        let cred = ScramCredential::generate(ScramMechanism::Sha512, b"secret", 4096);
        c.apply(&[CredentialChange { user: "bob".into(), mechanism: ScramMechanism::Sha512, credential: Some(cred) }]);
        assert!(c.verify_plain("bob", b"secret"));
        assert!(!c.verify_plain("bob", b"Secret"));
        assert!(!c.verify_plain("alice", b"secret"));
        let text = encode(&c);
        let back: Credentials = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, c);
        c.apply(&[CredentialChange { user: "bob".into(), mechanism: ScramMechanism::Sha512, credential: None }]);
        assert!(c.is_empty());
    }
}
