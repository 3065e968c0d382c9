//! The authorizer at work: whether a connection's principal may do an operation on a resource
//! (with `authorizer = "acl"`; everything is allowed with `none`), answered from the ACLs in
//! the metadata image (`server::acl`), and the ACLs' storage and changes.
//!
//! ACLs are metadata like the SCRAM credentials (`server::credentials`): a single node keeps
//! them in `<data_dir>/acls.json`, replaced atomically by core 0 before the new image is
//! published; a cluster in its metadata log (`MetadataRecord::CreateAcls`/`DeleteAcls`). Every
//! core checks requests against its own image; nothing leaves the core.
//!
//! A denial is counted in `/metrics` (`spate_authorization_denials_total`) and logged, at most
//! one line a second per core with the number of denials the quiet time swallowed, so a client
//! hammering a resource it may not touch cannot flood the log.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::acl::{Acls, Binding, Filter, Operation, Request, ResourceType, CLUSTER_NAME};
use super::session::Session;
use super::shard::Shard;
use crate::controller::metadata::AclRecord;
use crate::controller::MetadataRecord;
use crate::io::fs;
use crate::protocol::ResponseError;
use crate::storage::now_ms;

thread_local! {
    /// (the second of the last denial logged, denials not logged since).
    static DENIALS_LOGGED: Cell<(i64, u64)> = const { Cell::new((0, 0)) };
}

/// Whether `session` may do `op` on `name` of `resource`, quietly: for what a refusal only
/// hides (a topic left out of Metadata for every topic, an operation left out of authorized
/// operations), which Kafka neither logs nor counts as a denial.
pub fn permits(shard: &Shard, session: &Session, op: Operation, resource: ResourceType, name: &str) -> bool {
    if !shard.config.authorizer {
        return true;
    }
    let principal = session.principal();
    shard.image().acls.authorize(&Request { principal: &principal, host: &session.host, operation: op, resource_type: resource, name })
}

/// Whether `session` may do `op` on `name` of `resource`; a denial is logged (bounded) and
/// counted.
pub fn allowed(shard: &Shard, session: &Session, op: Operation, resource: ResourceType, name: &str) -> bool {
    if !shard.config.authorizer {
        return true;
    }
    let ok = permits(shard, session, op, resource, name);
    if !ok {
        let (principal, host) = (session.principal(), &session.host);
        crate::metrics::authorization_denied(resource, op);
        let second = now_ms() / 1000;
        DENIALS_LOGGED.with(|d| {
            let (last, quiet) = d.get();
            if second != last {
                tracing::info!(principal = principal.as_str(), host, operation = ?op, resource = ?resource, name, not_logged_since = quiet, "authorization denied");
                d.set((second, 0));
            } else {
                d.set((last, quiet + 1));
            }
        });
    }
    ok
}

/// [`allowed`] on the cluster resource.
pub fn cluster_allowed(shard: &Shard, session: &Session, op: Operation) -> bool {
    allowed(shard, session, op, ResourceType::Cluster, CLUSTER_NAME)
}

/// A single node's ACL file.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("acls.json")
}

/// Reads a single node's ACLs (main thread, before the cores start).
pub fn load(data_dir: &Path) -> anyhow::Result<Vec<AclRecord>> {
    let f = file(data_dir);
    let Some(text) = fs::read_to_string_sync(&f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))? else {
        return Ok(Vec::new());
    };
    let acls: Vec<AclRecord> = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
    tracing::info!(acls = acls.len(), file = %f.display(), "ACLs loaded");
    Ok(acls)
}

/// What one ACL change did: for each creation Ok or an error; for each deletion filter the
/// bindings it removed, or an error.
pub type AclOutcome = (Vec<Result<(), (ResponseError, String)>>, Vec<Result<Vec<Binding>, (ResponseError, String)>>);

impl Shard {
    /// Core 0: adds and removes ACLs, durably, then publishes them to every core.
    pub async fn alter_acls(&self, create: Vec<Binding>, delete: Vec<Filter>) -> AclOutcome {
        let current = self.image().acls.clone();
        let removed: Vec<Vec<Binding>> =
            delete.iter().map(|f| current.all().into_iter().filter(|b| f.matches(b)).cloned().collect()).collect();
        let gone: Vec<AclRecord> = removed.iter().flatten().map(Binding::record).collect();
        let added: Vec<AclRecord> = create.iter().map(Binding::record).collect();
        let result = if self.cluster.is_some() {
            self.cluster_alter_acls(added, gone).await
        } else {
            self.lock_metadata().await;
            let r = self.replace_acls(&added, &gone).await;
            self.unlock_metadata();
            r
        };
        match result {
            Ok(()) => (create.iter().map(|_| Ok(())).collect(), removed.into_iter().map(Ok).collect()),
            Err(e) => (create.iter().map(|_| Err(e.clone())).collect(), delete.iter().map(|_| Err(e.clone())).collect()),
        }
    }

    async fn replace_acls(&self, added: &[AclRecord], gone: &[AclRecord]) -> Result<(), (ResponseError, String)> {
        let mut image = (*self.image()).clone();
        let mut records: std::collections::BTreeSet<AclRecord> = image.acls.all().into_iter().map(Binding::record).collect();
        records.extend(added.iter().cloned());
        for g in gone {
            records.remove(g);
        }
        let f = file(&self.config.data_dir);
        let text = serde_json::to_vec_pretty(&records).expect("ACLs always serialise");
        fs::write_atomic(f.clone(), text).await.map_err(|e| {
            tracing::error!(file = %f.display(), error = %e, "could not store ACLs");
            (ResponseError::KafkaStorageError, format!("storing ACLs: {e}"))
        })?;
        tracing::info!(added = added.len(), removed = gone.len(), total = records.len(), "ACLs changed");
        image.acls = Arc::new(Acls::from_records(&records, self.config.super_users.clone(), self.config.allow_everyone_if_no_acl_found));
        let mut result = [Ok(())];
        self.publish(image, &mut result).await;
        let [r] = result;
        r
    }

    async fn cluster_alter_acls(&self, added: Vec<AclRecord>, gone: Vec<AclRecord>) -> Result<(), (ResponseError, String)> {
        if !added.is_empty() {
            self.propose_metadata(MetadataRecord::CreateAcls { acls: added }).await?;
        }
        if !gone.is_empty() {
            self.propose_metadata(MetadataRecord::DeleteAcls { acls: gone }).await?;
        }
        Ok(())
    }
}
