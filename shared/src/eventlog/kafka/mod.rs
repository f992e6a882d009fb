//! The Kafka backend, on rdkafka (librdkafka): works with Apache Kafka, Azure
//! Event Hubs' Kafka endpoint and tansu.
//!
//! The producer is idempotent with `acks=all`, so an `Ok` delivery is on every
//! in-sync replica and a retried send is never written twice. Its queue is
//! bounded (`queue.buffering.max.messages`) and a full queue is reported, not
//! waited on. Consumers never auto-commit; [`super::runner`] commits, and the
//! metadata committed with an offset survives even on brokers that drop it
//! (tansu 0.6; see `metadata.rs`).
//!
//! # Layout
//!
//! - `mod.rs`: [`KafkaLog`] (the connection settings every client shares,
//!   the [`EventLog`] implementation) and the error mapping;
//! - `producer.rs`: the publisher, its per-call delivery batches and its
//!   rebuild after a lost idempotence state;
//! - `consumer.rs`: the subscription, rebalance events in order with records;
//! - `metadata.rs`: the commit-metadata mirror topic for brokers that drop it;
//! - `reader.rs`: reading a partition back from its start (state topics);
//! - `tail.rs`: following a whole topic from its start (views every replica keeps);
//! - `admin.rs`: topic creation.

use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{EventLog, EventLogError, KeyValues, Publisher, Subscription, Tail};
use crate::config::KafkaArgs;
use admin::create_topics;
use consumer::KafkaSubscription;
use producer::KafkaPublisher;

mod admin;
mod consumer;
mod metadata;
mod producer;
mod reader;
mod tail;

/// A connection to a Kafka-protocol cluster.
#[derive(Clone)]
pub struct KafkaLog {
    args: KafkaArgs,
    client_id: String,
    publisher: Arc<KafkaPublisher>,
}

impl KafkaLog {
    /// Connect (lazily: librdkafka connects in the background) as `client_id`.
    pub fn connect(args: &KafkaArgs, client_id: &str) -> Result<Self, EventLogError> {
        let mut cfg = ClientConfig::new();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", args.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.messages", args.queue_max_messages.to_string());
        // Operator options come last so they can override any default above.
        apply_base(&mut cfg, args, client_id)?;
        let publisher =
            KafkaPublisher::new(cfg).map_err(|e| EventLogError::Other(format!("creating producer: {e}")))?;
        Ok(Self {
            args: args.clone(),
            client_id: client_id.to_owned(),
            publisher: Arc::new(publisher),
        })
    }
}

fn base_config(args: &KafkaArgs, client_id: &str) -> Result<ClientConfig, EventLogError> {
    let mut cfg = ClientConfig::new();
    apply_base(&mut cfg, args, client_id)?;
    Ok(cfg)
}

/// Where TLS clients find the CA bundle: the path the images ship and Debian
/// uses. Vendored OpenSSL would look in `/usr/local/ssl` otherwise.
/// `SSL_CERT_FILE` overrides it, and so does an explicit `ssl.ca.location` option.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn apply_base(cfg: &mut ClientConfig, args: &KafkaArgs, client_id: &str) -> Result<(), EventLogError> {
    cfg.set("bootstrap.servers", &args.brokers).set("client.id", client_id);
    let ca = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| CA_BUNDLE.to_owned());
    if std::path::Path::new(&ca).exists() {
        cfg.set("ssl.ca.location", ca);
    }
    for opt in &args.options {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| EventLogError::Other(format!("Kafka option '{opt}' is not key=value")))?;
        cfg.set(k.trim(), v.trim());
    }
    if let Some(pw) = &args.sasl_password {
        cfg.set("sasl.password", pw);
    }
    Ok(())
}

/// A consumer-queue error that only reports a lost or refused broker
/// connection, which librdkafka retries on its own.
fn reconnecting(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageConsumption(
            C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve | C::OperationTimedOut
        )
    )
}

fn map_err(e: &KafkaError) -> EventLogError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::QueueFull) => EventLogError::QueueFull,
        Some(
            C::MessageSizeTooLarge
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::TopicAuthorizationFailed
            | C::InvalidMessage,
        ) => EventLogError::Rejected(e.to_string()),
        Some(_) | None => EventLogError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, EventLogError> {
        Ok(Box::new(KafkaSubscription::join(self, group, topics)?))
    }

    async fn ensure_topics(&self, topics: &[String], partitions: i32) -> Result<(), EventLogError> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(self.args.replication)))
            .collect();
        create_topics(&self.args, &self.client_id, &new).await
    }

    async fn ensure_compacted_topic(&self, topic: &str, partitions: i32) -> Result<(), EventLogError> {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.args.replication))
            .set("cleanup.policy", "compact");
        create_topics(&self.args, &self.client_id, &[new]).await
    }

    async fn read_partition(&self, topic: &str, partition: i32) -> Result<KeyValues, EventLogError> {
        reader::read_partition(self, topic, partition).await
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Tail>, EventLogError> {
        Ok(Box::new(tail::open(self, topic).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_clients_can_be_created_as_for_event_hubs() {
        // Event Hubs' Kafka endpoint: SASL_SSL with PLAIN. A build without TLS
        // support fails right here ("OpenSSL not available at build time").
        let args = KafkaArgs {
            brokers: "example.servicebus.windows.net:9093".into(),
            options: vec![
                "security.protocol=SASL_SSL".into(),
                "sasl.mechanism=PLAIN".into(),
                "sasl.username=$ConnectionString".into(),
            ],
            sasl_password: Some(
                "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x".into(),
            ),
            ..KafkaArgs::default()
        };
        let log = KafkaLog::connect(&args, "tls-test");
        assert!(log.is_ok(), "{:?}", log.err());
        let cfg = base_config(&args, "tls-test").expect("config");
        if std::path::Path::new(CA_BUNDLE).exists() && std::env::var_os("SSL_CERT_FILE").is_none() {
            assert_eq!(
                cfg.get("ssl.ca.location"),
                Some(CA_BUNDLE),
                "the system CA bundle, not vendored OpenSSL's /usr/local/ssl"
            );
        }
    }
}
