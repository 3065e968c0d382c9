//! CreateAcls (key 30), DescribeAcls (key 29) and DeleteAcls (key 31): Kafka's ACL bindings, as
//! `kafka-acls` and every Admin client manage them (`spate acl` too). Changes are made by core 0,
//! durably, before the answer (`server::authz`). CreateAcls and DeleteAcls need ALTER on the
//! cluster, DescribeAcls DESCRIBE (CLUSTER_AUTHORIZATION_FAILED otherwise); a binding or filter
//! with codes Kafka refuses (an UNKNOWN or ANY code where a concrete one is needed, a PREFIXED
//! `*`, a principal that is not `Type:name`, a cluster resource not named `kafka-cluster`) gets
//! INVALID_REQUEST with the reason, as in Kafka, and the others of the request go on.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse,
};

use super::super::acl::{binding_to_create, Binding, Filter, Operation};
use super::super::authz::cluster_allowed;
use super::super::session::Session;
use super::super::shard::{current, Shard};
use crate::protocol::{code, ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (1, 3);

fn text(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub async fn create(shard: &Rc<Shard>, session: &Session, _version: i16, req: CreateAclsRequest) -> CreateAclsResponse {
    let mut resp = CreateAclsResponse::default();
    if !cluster_allowed(shard, session, Operation::Alter) {
        resp.results = req
            .creations
            .iter()
            .map(|_| AclCreationResult::default().with_error_code(code(ResponseError::ClusterAuthorizationFailed)))
            .collect();
        return resp;
    }
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for c in &req.creations {
        let b = binding_to_create(
            c.resource_type,
            c.resource_name.as_str(),
            c.resource_pattern_type,
            c.principal.as_str(),
            c.host.as_str(),
            c.operation,
            c.permission_type,
        );
        let mut r = AclCreationResult::default();
        match b {
            Ok(b) => {
                slots.push(resp.results.len());
                valid.push(b);
            }
            Err(m) => {
                r.error_code = code(ResponseError::InvalidRequest);
                r.error_message = Some(StrBytes::from_string(m));
            }
        }
        resp.results.push(r);
    }
    if !valid.is_empty() {
        let (created, _) = shard.invoke_on(0, move || async move { current().alter_acls(valid, Vec::new()).await }).await;
        for (slot, r) in slots.into_iter().zip(created) {
            if let Err((e, m)) = r {
                resp.results[slot].error_code = code(e);
                resp.results[slot].error_message = Some(StrBytes::from_string(m));
            }
        }
    }
    resp
}

fn described(bindings: Vec<&Binding>) -> Vec<DescribeAclsResource> {
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in bindings {
        by_resource.entry((b.resource_type as i8, b.name.clone(), b.pattern as i8)).or_default().push(
            AclDescription::default()
                .with_principal(StrBytes::from_string(b.principal.clone()))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_operation(b.operation as i8)
                .with_permission_type(b.permission_code()),
        );
    }
    by_resource
        .into_iter()
        .map(|((t, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(t)
                .with_resource_name(StrBytes::from_string(name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect()
}

pub async fn describe(shard: &Rc<Shard>, session: &Session, _version: i16, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    if !cluster_allowed(shard, session, Operation::Describe) {
        resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
        return resp;
    }
    let filter = Filter {
        resource_type: req.resource_type_filter,
        name: text(&req.resource_name_filter),
        pattern: req.pattern_type_filter,
        principal: text(&req.principal_filter),
        host: text(&req.host_filter),
        operation: req.operation,
        permission: req.permission_type,
    };
    if let Err(m) = filter.check() {
        resp.error_code = code(ResponseError::InvalidRequest);
        resp.error_message = Some(StrBytes::from_string(m));
        return resp;
    }
    let image = shard.image();
    resp.resources = described(image.acls.all().into_iter().filter(|b| filter.matches(b)).collect());
    resp
}

pub async fn delete(shard: &Rc<Shard>, session: &Session, _version: i16, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut resp = DeleteAclsResponse::default();
    if !cluster_allowed(shard, session, Operation::Alter) {
        resp.filter_results = req
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult::default().with_error_code(code(ResponseError::ClusterAuthorizationFailed)))
            .collect();
        return resp;
    }
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for f in &req.filters {
        let filter = Filter {
            resource_type: f.resource_type_filter,
            name: text(&f.resource_name_filter),
            pattern: f.pattern_type_filter,
            principal: text(&f.principal_filter),
            host: text(&f.host_filter),
            operation: f.operation,
            permission: f.permission_type,
        };
        let mut r = DeleteAclsFilterResult::default();
        match filter.check() {
            Ok(()) => {
                slots.push(resp.filter_results.len());
                valid.push(filter);
            }
            Err(m) => {
                r.error_code = code(ResponseError::InvalidRequest);
                r.error_message = Some(StrBytes::from_string(m));
            }
        }
        resp.filter_results.push(r);
    }
    if !valid.is_empty() {
        let (_, deleted) = shard.invoke_on(0, move || async move { current().alter_acls(Vec::new(), valid).await }).await;
        for (slot, r) in slots.into_iter().zip(deleted) {
            match r {
                Ok(bindings) => {
                    resp.filter_results[slot].matching_acls = bindings
                        .iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type as i8)
                                .with_resource_name(StrBytes::from_string(b.name.clone()))
                                .with_pattern_type(b.pattern as i8)
                                .with_principal(StrBytes::from_string(b.principal.clone()))
                                .with_host(StrBytes::from_string(b.host.clone()))
                                .with_operation(b.operation as i8)
                                .with_permission_type(b.permission_code())
                        })
                        .collect();
                }
                Err((e, m)) => {
                    resp.filter_results[slot].error_code = code(e);
                    resp.filter_results[slot].error_message = Some(StrBytes::from_string(m));
                }
            }
        }
    }
    resp
}
