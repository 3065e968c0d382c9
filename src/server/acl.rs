//! Kafka's authorization model, pure (issue 24; see ARCHITECTURE.md, "Security's shape"). An [`Acls`] holds ACL bindings (resource type, name
//! and pattern; principal, host, operation, allow or deny) indexed for lookups, and
//! [`Acls::authorize`] answers as Kafka's `StandardAuthorizer` does:
//!
//! - a super user may do anything;
//! - the bindings that match a request are those of its resource type whose name is the
//!   resource's (LITERAL), the wildcard `*` (LITERAL), or a prefix of it (PREFIXED), for the
//!   request's principal or `User:*`, and its host or `*`;
//! - a matching DENY for the operation (or ALL) denies; else a matching ALLOW for the operation,
//!   ALL, or one that implies it (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS
//!   implies DESCRIBE_CONFIGS) allows;
//! - with neither: allowed only if no binding at all matches the resource and
//!   `allow_everyone_if_no_acl_found` is set.
//!
//! Codes are Kafka's (`AclOperation`, `AclPermissionType`, `ResourceType`, `PatternType`), so the
//! ACL APIs can carry them as they are.

use std::collections::HashMap;

use crate::controller::metadata::AclRecord;

/// Kafka's `ResourceType` codes for the resources ACLs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

impl ResourceType {
    pub fn from_code(code: i8) -> Option<ResourceType> {
        Some(match code {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }
}

/// Kafka's `AclOperation` codes (ANY and UNKNOWN are filters' and are not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

impl Operation {
    pub fn from_code(code: i8) -> Option<Operation> {
        use Operation::*;
        Some(match code {
            2 => All,
            3 => Read,
            4 => Write,
            5 => Create,
            6 => Delete,
            7 => Alter,
            8 => Describe,
            9 => ClusterAction,
            10 => DescribeConfigs,
            11 => AlterConfigs,
            12 => IdempotentWrite,
            13 => CreateTokens,
            14 => DescribeTokens,
            _ => return None,
        })
    }

    /// Whether an ALLOW for `self` also allows `asked` (itself, ALL, or Kafka's implied ones).
    fn allows(self, asked: Operation) -> bool {
        self == asked
            || self == Operation::All
            || (asked == Operation::Describe && matches!(self, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (asked == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// Whether a DENY for `self` denies `asked` (itself or ALL only, as in Kafka).
    fn denies(self, asked: Operation) -> bool {
        self == asked || self == Operation::All
    }
}

/// Kafka's `PatternType` codes of a stored binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal = 3,
    Prefixed = 4,
}

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub resource_type: ResourceType,
    /// The resource name; for LITERAL, `*` matches every name.
    pub name: String,
    pub pattern: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// An address, or `*` for any.
    pub host: String,
    pub operation: Operation,
    pub allow: bool,
}

impl Binding {
    /// From the metadata's form; None for codes this build does not know.
    pub fn from_record(r: &AclRecord) -> Option<Binding> {
        Some(Binding {
            resource_type: ResourceType::from_code(r.resource_type)?,
            name: r.name.clone(),
            pattern: match r.pattern {
                3 => PatternType::Literal,
                4 => PatternType::Prefixed,
                _ => return None,
            },
            principal: r.principal.clone(),
            host: r.host.clone(),
            operation: Operation::from_code(r.operation)?,
            allow: r.allow,
        })
    }

    pub fn record(&self) -> AclRecord {
        AclRecord {
            resource_type: self.resource_type as i8,
            name: self.name.clone(),
            pattern: self.pattern as i8,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation as i8,
            allow: self.allow,
        }
    }

    /// Kafka's permission type code: 2 DENY, 3 ALLOW.
    pub fn permission_code(&self) -> i8 {
        if self.allow {
            3
        } else {
            2
        }
    }
}

/// An ACL filter as DescribeAcls and DeleteAcls carry it (Kafka's `AclBindingFilter`): codes
/// with Kafka's ANY (1) and, for the pattern, MATCH (2); `None` strings match anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

const ANY: i8 = 1;
const MATCH: i8 = 2;

impl Filter {
    /// Whether `b` is one of the bindings the filter names.
    pub fn matches(&self, b: &Binding) -> bool {
        let resource = (self.resource_type == ANY || self.resource_type == b.resource_type as i8)
            && match (self.pattern, &self.name) {
                (ANY, None) => true,
                (ANY, Some(n)) => *n == b.name,
                (MATCH, None) => true,
                (MATCH, Some(n)) => match b.pattern {
                    PatternType::Literal => b.name == *n || b.name == WILDCARD,
                    PatternType::Prefixed => n.starts_with(&b.name),
                },
                (p, n) => p == b.pattern as i8 && n.as_ref().is_none_or(|n| *n == b.name),
            };
        resource
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == ANY || self.operation == b.operation as i8)
            && (self.permission == ANY || self.permission == b.permission_code())
    }

    /// Refuses a filter no binding could match for a reason worth telling (Kafka's INVALID_REQUEST
    /// on an UNKNOWN code).
    pub fn check(&self) -> Result<(), String> {
        if self.resource_type != ANY && ResourceType::from_code(self.resource_type).is_none() {
            return Err(format!("unknown resource type {}", self.resource_type));
        }
        if !(1..=4).contains(&self.pattern) {
            return Err(format!("unknown pattern type {}", self.pattern));
        }
        if self.operation != ANY && Operation::from_code(self.operation).is_none() {
            return Err(format!("unknown operation {}", self.operation));
        }
        if !(1..=3).contains(&self.permission) {
            return Err(format!("unknown permission type {}", self.permission));
        }
        Ok(())
    }
}

/// The cluster resource's one name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// A CreateAcls binding from its codes, checked as Kafka checks it.
pub fn binding_to_create(
    resource_type: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<Binding, String> {
    let resource_type = ResourceType::from_code(resource_type).ok_or_else(|| format!("invalid resource type {resource_type}"))?;
    let pattern = match pattern {
        3 => PatternType::Literal,
        4 => PatternType::Prefixed,
        p => return Err(format!("invalid pattern type {p}: LITERAL (3) or PREFIXED (4)")),
    };
    let operation = Operation::from_code(operation).ok_or_else(|| format!("invalid operation {operation}"))?;
    let allow = match permission {
        2 => false,
        3 => true,
        p => return Err(format!("invalid permission type {p}: DENY (2) or ALLOW (3)")),
    };
    if name.is_empty() {
        return Err("the resource name must not be empty".into());
    }
    if pattern == PatternType::Prefixed && name == WILDCARD {
        return Err("a PREFIXED pattern cannot be the wildcard '*'".into());
    }
    if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
        return Err(format!("the cluster resource is named {CLUSTER_NAME:?}, not {name:?}"));
    }
    match principal.split_once(':') {
        Some((kind, who)) if !kind.is_empty() && !who.is_empty() => {}
        _ => return Err(format!("invalid principal {principal:?}: expected Type:name, like User:alice")),
    }
    if host.is_empty() {
        return Err("the host must not be empty ('*' for any)".into());
    }
    Ok(Binding { resource_type, name: name.to_string(), pattern, principal: principal.to_string(), host: host.to_string(), operation, allow })
}

/// The wildcard for names, principals' names and hosts.
pub const WILDCARD: &str = "*";
const ANY_USER: &str = "User:*";

/// What a request asks: may `principal` from `host` do `operation` on the resource?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// ACL bindings indexed by resource type, then name (literal) or prefix (prefixed).
#[derive(Debug, Default, Clone)]
pub struct Acls {
    literal: HashMap<ResourceType, HashMap<String, Vec<Binding>>>,
    prefixed: HashMap<ResourceType, HashMap<String, Vec<Binding>>>,
    /// The lengths of the prefixes stored, per resource type, so a lookup tries only those.
    prefix_lengths: HashMap<ResourceType, Vec<usize>>,
    super_users: Vec<String>,
    allow_everyone_if_no_acl_found: bool,
}

impl Acls {
    /// `super_users`: principals allowed everything (Kafka's `super.users`).
    pub fn new(super_users: Vec<String>, allow_everyone_if_no_acl_found: bool) -> Acls {
        Acls { super_users, allow_everyone_if_no_acl_found, ..Acls::default() }
    }

    /// From the metadata's bindings (one of codes this build does not know is skipped with a
    /// log line).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a AclRecord>,
        super_users: Vec<String>,
        allow_everyone_if_no_acl_found: bool,
    ) -> Acls {
        let mut acls = Acls::new(super_users, allow_everyone_if_no_acl_found);
        for r in records {
            match Binding::from_record(r) {
                Some(b) => {
                    acls.add(b);
                }
                None => tracing::warn!(acl = ?r, "ACL binding with codes this build does not know ignored"),
            }
        }
        acls
    }

    /// Adds a binding; false if it was there already (CreateAcls is idempotent).
    pub fn add(&mut self, b: Binding) -> bool {
        let map = match b.pattern {
            PatternType::Literal => &mut self.literal,
            PatternType::Prefixed => {
                let lengths = self.prefix_lengths.entry(b.resource_type).or_default();
                if let Err(at) = lengths.binary_search(&b.name.len()) {
                    lengths.insert(at, b.name.len());
                }
                &mut self.prefixed
            }
        };
        let list = map.entry(b.resource_type).or_default().entry(b.name.clone()).or_default();
        if list.contains(&b) {
            return false;
        }
        list.push(b);
        true
    }

    /// Removes the bindings `matches` picks (DeleteAcls' filters); returns them.
    pub fn remove(&mut self, mut matches: impl FnMut(&Binding) -> bool) -> Vec<Binding> {
        let mut removed = Vec::new();
        for map in [&mut self.literal, &mut self.prefixed] {
            for names in map.values_mut() {
                names.retain(|_, list| {
                    list.retain(|b| {
                        let gone = matches(b);
                        if gone {
                            removed.push(b.clone());
                        }
                        !gone
                    });
                    !list.is_empty()
                });
            }
            map.retain(|_, names| !names.is_empty());
        }
        let mut lengths: HashMap<ResourceType, Vec<usize>> = HashMap::new();
        for (t, names) in &self.prefixed {
            let l = lengths.entry(*t).or_default();
            l.extend(names.keys().map(String::len));
            l.sort_unstable();
            l.dedup();
        }
        self.prefix_lengths = lengths;
        removed
    }

    /// Every binding (DescribeAcls filters over them), in a stable order.
    pub fn all(&self) -> Vec<&Binding> {
        let mut out: Vec<&Binding> = self.literal.values().chain(self.prefixed.values()).flat_map(|n| n.values()).flatten().collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.literal.values().chain(self.prefixed.values()).flat_map(|n| n.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each binding whose resource part matches the request's resource, until it
    /// returns false.
    fn each_for_resource(&self, r: &Request<'_>, mut f: impl FnMut(&Binding) -> bool) {
        let t = r.resource_type;
        if let Some(names) = self.literal.get(&t) {
            for n in [r.name, WILDCARD] {
                for b in names.get(n).into_iter().flatten() {
                    if !f(b) {
                        return;
                    }
                }
            }
        }
        let (Some(names), Some(lengths)) = (self.prefixed.get(&t), self.prefix_lengths.get(&t)) else { return };
        for len in lengths.iter().take_while(|len| **len <= r.name.len()) {
            let Some(prefix) = r.name.get(..*len) else { continue };
            for b in names.get(prefix).into_iter().flatten() {
                if !f(b) {
                    return;
                }
            }
        }
    }

    /// Kafka's answer to `r` (see the module's comment).
    pub fn authorize(&self, r: &Request<'_>) -> bool {
        if self.super_users.iter().any(|s| s == r.principal) {
            return true;
        }
        let (mut any, mut allowed, mut denied) = (false, false, false);
        self.each_for_resource(r, |b| {
            any = true;
            if (b.principal != r.principal && b.principal != ANY_USER) || (b.host != r.host && b.host != WILDCARD) {
                return true;
            }
            if !b.allow && b.operation.denies(r.operation) {
                denied = true;
                return false;
            }
            allowed |= b.allow && b.operation.allows(r.operation);
            true
        });
        !denied && (allowed || (!any && self.allow_everyone_if_no_acl_found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(t: ResourceType, name: &str, pattern: PatternType, principal: &str, op: Operation, allow: bool) -> Binding {
        Binding { resource_type: t, name: name.into(), pattern, principal: principal.into(), host: WILDCARD.into(), operation: op, allow }
    }

    fn ask<'a>(principal: &'a str, op: Operation, t: ResourceType, name: &'a str) -> Request<'a> {
        Request { principal, host: "10.0.0.1", operation: op, resource_type: t, name }
    }

    use Operation::*;
    use PatternType::*;
    use ResourceType::*;

    #[test]
    fn allow_deny_wildcards_prefixes_and_implied_operations() {
        let mut a = Acls::new(vec!["User:admin".into()], false);
        assert!(a.add(bind(Topic, "orders", Literal, "User:alice", Read, true)));
        assert!(!a.add(bind(Topic, "orders", Literal, "User:alice", Read, true)), "added once");
        a.add(bind(Topic, "pay-", Prefixed, "User:bob", Write, true));
        a.add(bind(Topic, "pay-secret", Literal, "User:bob", All, false));
        a.add(bind(Group, WILDCARD, Literal, ANY_USER, Read, true));
        a.add(bind(Cluster, "kafka-cluster", Literal, "User:ops", AlterConfigs, true));

        assert!(a.authorize(&ask("User:alice", Read, Topic, "orders")));
        assert!(a.authorize(&ask("User:alice", Describe, Topic, "orders")), "READ implies DESCRIBE");
        assert!(!a.authorize(&ask("User:alice", Write, Topic, "orders")));
        assert!(!a.authorize(&ask("User:carol", Read, Topic, "orders")), "another principal");
        assert!(a.authorize(&ask("User:bob", Write, Topic, "pay-in")), "a prefix");
        assert!(!a.authorize(&ask("User:bob", Write, Topic, "pa")), "shorter than the prefix");
        assert!(!a.authorize(&ask("User:bob", Write, Topic, "pay-secret")), "a DENY wins");
        assert!(a.authorize(&ask("User:anyone", Read, Group, "g1")), "wildcard name and principal");
        assert!(a.authorize(&ask("User:ops", DescribeConfigs, Cluster, "kafka-cluster")), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
        assert!(!a.authorize(&ask("User:ops", Alter, Cluster, "kafka-cluster")));
        assert!(a.authorize(&ask("User:admin", Delete, Topic, "anything")), "a super user");
        assert!(!a.authorize(&ask("User:alice", Read, Topic, "no-acls")), "no ACL: denied by default");
        let open = Acls { allow_everyone_if_no_acl_found: true, ..a.clone() };
        assert!(open.authorize(&ask("User:alice", Read, Topic, "no-acls")), "allow_everyone_if_no_acl_found");
        assert!(!open.authorize(&ask("User:carol", Read, Topic, "orders")), "the resource has ACLs: not for everyone");
    }

    #[test]
    fn a_deny_for_a_host_and_removal() {
        let mut a = Acls::new(vec![], false);
        a.add(bind(Topic, "t", Literal, ANY_USER, Read, true));
        a.add(Binding { host: "10.0.0.1".into(), ..bind(Topic, "t", Literal, "User:eve", Read, false) });
        assert!(!a.authorize(&ask("User:eve", Read, Topic, "t")), "denied from that host");
        assert!(a.authorize(&Request { host: "10.0.0.2", ..ask("User:eve", Read, Topic, "t") }), "allowed from another");
        assert!(a.authorize(&ask("User:eve", Describe, Topic, "t")), "a denied READ does not deny DESCRIBE, which everyone's READ implies");
        let removed = a.remove(|b| !b.allow);
        assert_eq!(removed.len(), 1);
        assert!(a.authorize(&ask("User:eve", Read, Topic, "t")));
        a.add(bind(Topic, "p", Prefixed, "User:x", Read, true));
        assert_eq!(a.len(), 2);
        a.remove(|b| b.pattern == Prefixed);
        assert!(!a.authorize(&ask("User:x", Read, Topic, "p1")));
        assert_eq!(a.all().len(), 1);
    }

    #[test]
    fn kafka_codes_round_trip() {
        for code in 2..=14 {
            assert_eq!(Operation::from_code(code).map(|o| o as i8), Some(code));
        }
        for code in 2..=7 {
            assert_eq!(ResourceType::from_code(code).map(|t| t as i8), Some(code));
        }
        assert_eq!(Operation::from_code(1), None, "ANY is a filter's");
        assert_eq!(ResourceType::from_code(1), None);
    }
}
