//! DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51): the SCRAM users
//! SASL checks, as Kafka's `kafka-configs --entity-type users` and Admin client manage them. The
//! client sends the salted password (never the password), its salt and iteration count; the
//! broker keeps the keys derived from it (`server::credentials`).
//!
//! Checks, with Kafka's codes: an unknown mechanism is UNSUPPORTED_SASL_MECHANISM; an empty
//! user, salt or salted password, or an iteration count outside 4096..=16384, is
//! UNACCEPTABLE_CREDENTIAL; one user and mechanism twice in a request is DUPLICATE_RESOURCE;
//! removing a credential that does not exist is RESOURCE_NOT_FOUND. A user with any refused
//! change has none of its changes applied; the other users' are.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};

use super::super::credentials::CredentialChange;
use super::super::shard::{current, Shard};
use crate::protocol::sasl::{ScramCredential, ScramMechanism, MAX_ITERATIONS};
use crate::protocol::{code, ResponseError, StrBytes};

pub const DESCRIBE_VERSIONS: (i16, i16) = (0, 0);
pub const ALTER_VERSIONS: (i16, i16) = (0, 0);

pub async fn describe(shard: &Rc<Shard>, _version: i16, req: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    let image = shard.image();
    let creds = &image.credentials;
    let info = |by_mech: &BTreeMap<ScramMechanism, ScramCredential>| {
        by_mech
            .iter()
            .map(|(m, c)| CredentialInfo::default().with_mechanism(m.kafka_type()).with_iterations(c.iterations))
            .collect::<Vec<_>>()
    };
    let mut resp = DescribeUserScramCredentialsResponse::default();
    match req.users.filter(|u| !u.is_empty()) {
        None => {
            for (user, by_mech) in creds.users() {
                resp.results.push(
                    DescribeUserScramCredentialsResult::default()
                        .with_user(StrBytes::from_string(user.clone()))
                        .with_credential_infos(info(by_mech)),
                );
            }
        }
        Some(users) => {
            let mut seen = BTreeMap::<String, usize>::new();
            for u in &users {
                *seen.entry(u.name.to_string()).or_default() += 1;
            }
            for (name, times) in seen {
                let mut r = DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(name.clone()));
                if times > 1 {
                    r.error_code = code(ResponseError::DuplicateResource);
                    r.error_message = Some(StrBytes::from_string(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}")));
                } else if let Some((_, by_mech)) = creds.users().find(|(u, _)| **u == name) {
                    r.credential_infos = info(by_mech);
                } else {
                    r.error_code = code(ResponseError::ResourceNotFound);
                    r.error_message = Some(StrBytes::from_string(format!("Attempt to describe a user credential that does not exist: {name}")));
                }
                resp.results.push(r);
            }
        }
    }
    resp
}

pub async fn alter(shard: &Rc<Shard>, _version: i16, req: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let image = shard.image();
    // Per user: its changes, or the first refusal.
    let mut users: BTreeMap<String, Result<Vec<CredentialChange>, (ResponseError, String)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut note = |user: String, mech: i8, change: Result<Option<ScramCredential>, (ResponseError, String)>| {
        let entry = users.entry(user.clone()).or_insert_with(|| Ok(Vec::new()));
        let Ok(changes) = entry else { return };
        let checked = (|| {
            check(!user.is_empty(), ResponseError::UnacceptableCredential, "Username must not be empty")?;
            let m = ScramMechanism::from_kafka_type(mech)
                .ok_or_else(|| (ResponseError::UnsupportedSaslMechanism, format!("Unknown SCRAM mechanism {mech}")))?;
            if !seen.insert((user.clone(), m)) {
                return Err((ResponseError::DuplicateResource, format!("A user credential cannot be altered twice in the same request: {user} {}", m.name())));
            }
            let credential = change?;
            if credential.is_none() && image.credentials.get(&user, m).is_none() {
                return Err((ResponseError::ResourceNotFound, format!("Attempt to delete a user credential that does not exist: {user} {}", m.name())));
            }
            Ok(CredentialChange { user: user.clone(), mechanism: m, credential })
        })();
        match checked {
            Ok(c) => changes.push(c),
            Err(e) => *entry = Err(e),
        }
    };
    for d in &req.deletions {
        note(d.name.to_string(), d.mechanism, Ok(None));
    }
    for u in &req.upsertions {
        let cred = ScramMechanism::from_kafka_type(u.mechanism)
            .ok_or_else(|| (ResponseError::UnsupportedSaslMechanism, format!("Unknown SCRAM mechanism {}", u.mechanism)))
            .and_then(|m| {
                if u.iterations < m.min_iterations() {
                    return Err((ResponseError::UnacceptableCredential, format!("Too few iterations: {} (at least {})", u.iterations, m.min_iterations())));
                }
                if u.iterations > MAX_ITERATIONS {
                    return Err((ResponseError::UnacceptableCredential, format!("Too many iterations: {} (at most {MAX_ITERATIONS})", u.iterations)));
                }
                if u.salt.is_empty() || u.salted_password.is_empty() {
                    return Err((ResponseError::UnacceptableCredential, "Salt and salted password must not be empty".to_string()));
                }
                Ok(Some(ScramCredential::from_salted_password(m, &u.salted_password, &u.salt, u.iterations)))
            });
        note(u.name.to_string(), u.mechanism, cred);
    }
    let mut resp = AlterUserScramCredentialsResponse::default();
    let mut applied = Vec::new();
    let mut slots = Vec::new();
    for (user, outcome) in users {
        let mut r = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
        match outcome {
            Ok(changes) => {
                slots.push(resp.results.len());
                applied.extend(changes);
            }
            Err((e, m)) => {
                r.error_code = code(e);
                r.error_message = Some(StrBytes::from_string(m));
            }
        }
        resp.results.push(r);
    }
    if !applied.is_empty() {
        if let Err((e, m)) = shard.invoke_on(0, move || async move { current().alter_credentials(applied).await }).await {
            for slot in slots {
                resp.results[slot].error_code = code(e);
                resp.results[slot].error_message = Some(StrBytes::from_string(m.clone()));
            }
        }
    }
    resp
}

fn check(ok: bool, e: ResponseError, m: &str) -> Result<(), (ResponseError, String)> {
    if ok {
        Ok(())
    } else {
        Err((e, m.to_string()))
    }
}
