//! librdkafka (through the `rdkafka` crate) as `spate produce` and `spate consume` use it: the
//! client settings built from the command line, and Kafka's names for its errors.
//!
//! librdkafka is a complete Kafka client with its own threads and sockets; the commands only
//! configure it, hand it records and read what it reports.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::io::client::CLIENT_ID;

/// `-X key=value`: a librdkafka setting.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE (a librdkafka setting, such as linger.ms=50)".to_string()),
    }
}

/// A client for `bootstrap` with `defaults`, then the user's `-X` settings over them.
pub fn config(bootstrap: &str, defaults: &[(&str, &str)], properties: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("client.id", CLIENT_ID);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Kafka's name for a librdkafka error code: the broker's own code named as Kafka does
/// (`UNKNOWN_TOPIC_OR_PARTITION`); librdkafka's local "unknown topic" and "unknown partition" as
/// that same name; other local errors as librdkafka's enum name with a leading `_`.
pub fn code_name(code: RDKafkaErrorCode) -> String {
    match code {
        RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownPartition => super::error_name(3),
        _ => {
            let n = code as i32;
            if n > 0 && n <= i16::MAX as i32 {
                return super::error_name(n as i16);
            }
            let camel = format!("{code:?}");
            let mut s = String::from("_");
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    s.push('_');
                }
                s.push(ch.to_ascii_uppercase());
            }
            s
        }
    }
}

/// librdkafka's description of an error code ("Broker: Unknown topic or partition").
pub fn description(code: RDKafkaErrorCode) -> String {
    // The crate writes `Name (description)`.
    let full = code.to_string();
    let prefix = format!("{code:?} (");
    match full.strip_prefix(&prefix).and_then(|d| d.strip_suffix(')')) {
        Some(d) => d.to_string(),
        None => full,
    }
}

/// `NAME (librdkafka's description)` for an error code.
pub fn describe_code(code: RDKafkaErrorCode) -> String {
    format!("{} ({})", code_name(code), description(code))
}

/// An error from librdkafka, named as Kafka does when it carries a code.
pub fn describe(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => describe_code(code),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_kafkas_names() {
        assert_eq!(code_name(RDKafkaErrorCode::UnknownTopicOrPartition), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(code_name(RDKafkaErrorCode::UnknownTopic), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(code_name(RDKafkaErrorCode::MessageSizeTooLarge), "MESSAGE_TOO_LARGE");
        assert_eq!(code_name(RDKafkaErrorCode::MessageTimedOut), "_MESSAGE_TIMED_OUT");
        assert_eq!(describe_code(RDKafkaErrorCode::UnknownTopicOrPartition), "UNKNOWN_TOPIC_OR_PARTITION (Broker: Unknown topic or partition)");
    }

    #[test]
    fn properties_parse() {
        assert_eq!(parse_property("linger.ms=5").unwrap(), ("linger.ms".to_string(), "5".to_string()));
        assert_eq!(parse_property("a=b=c").unwrap(), ("a".to_string(), "b=c".to_string()));
        assert!(parse_property("=1").is_err());
        assert!(parse_property("x").is_err());
    }
}
