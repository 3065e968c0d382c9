//! Every error code a response carries, whatever the API, for the `spate_errors_total` metric.
//! A response has error codes at the top, per topic, per partition or per group, depending on
//! the API; each is counted once, by API and Kafka's name for it (`NOT_COORDINATOR`, ...).

use kafka_protocol::messages::ResponseKind;

use crate::protocol::ResponseError;

/// Calls `f` with every non-zero error code in `resp`.
pub fn each_code(resp: &ResponseKind, mut f: impl FnMut(i16)) {
    let mut g = |code: i16| {
        if code != 0 {
            f(code)
        }
    };
    match resp {
        ResponseKind::Produce(r) => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| g(p.error_code)),
        ResponseKind::Fetch(r) => {
            g(r.error_code);
            r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code)),
        ResponseKind::Metadata(r) => {
            for t in &r.topics {
                g(t.error_code);
                t.partitions.iter().for_each(|p| g(p.error_code));
            }
        }
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            g(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code));
            for group in &r.groups {
                g(group.error_code);
                group.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code));
            }
        }
        ResponseKind::FindCoordinator(r) => {
            g(r.error_code);
            r.coordinators.iter().for_each(|c| g(c.error_code));
        }
        ResponseKind::JoinGroup(r) => g(r.error_code),
        ResponseKind::Heartbeat(r) => g(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            g(r.error_code);
            r.members.iter().for_each(|m| g(m.error_code));
        }
        ResponseKind::SyncGroup(r) => g(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|x| g(x.error_code)),
        ResponseKind::ListGroups(r) => g(r.error_code),
        ResponseKind::ApiVersions(r) => g(r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| g(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| g(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|x| g(x.error_code)),
        ResponseKind::DescribeCluster(r) => g(r.error_code),
        ResponseKind::DescribeLogDirs(r) => {
            g(r.error_code);
            r.results.iter().for_each(|x| g(x.error_code));
        }
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|x| g(x.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|x| g(x.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code)),
        ResponseKind::InitProducerId(r) => g(r.error_code),
        ResponseKind::OffsetForLeaderEpoch(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|x| g(x.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|x| g(x.error_code)),
        ResponseKind::OffsetDelete(r) => {
            g(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| g(p.error_code));
        }
        ResponseKind::ConsumerGroupHeartbeat(r) => g(r.error_code),
        ResponseKind::ConsumerGroupDescribe(r) => r.groups.iter().for_each(|x| g(x.error_code)),
        // Every API in `SUPPORTED` has an arm above; add one with each new API.
        _ => {}
    }
}

/// Kafka's name for an error code, as its documentation and logs spell it
/// (`UNKNOWN_TOPIC_OR_PARTITION`), or `UNKNOWN_CODE_<n>`.
pub fn code_name(code: i16) -> String {
    let e = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => return format!("UNKNOWN_CODE_{code}"),
        Some(e) => e,
    };
    let camel = format!("{e:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;

    #[test]
    fn names_are_kafkas() {
        assert_eq!(code_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(code_name(16), "NOT_COORDINATOR");
        assert_eq!(code_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(code_name(9999), "UNKNOWN_CODE_9999");
    }

    #[test]
    fn nested_codes_are_found() {
        let r = OffsetFetchResponse::default().with_groups(vec![offset_fetch_response::OffsetFetchResponseGroup::default()
            .with_error_code(0)
            .with_topics(vec![offset_fetch_response::OffsetFetchResponseTopics::default().with_partitions(vec![
                offset_fetch_response::OffsetFetchResponsePartitions::default().with_error_code(3),
                offset_fetch_response::OffsetFetchResponsePartitions::default().with_error_code(0),
            ])])]);
        let mut codes = Vec::new();
        each_code(&ResponseKind::OffsetFetch(r), |c| codes.push(c));
        assert_eq!(codes, vec![3]);
    }
}
