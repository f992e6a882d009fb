//! Topic creation through librdkafka's admin client.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{base_config, map_err};
use crate::config::KafkaArgs;
use crate::eventlog::EventLogError;

/// Create `topics`; one that exists already is fine. A topic the cluster
/// refuses for good (authorisation, policy, invalid settings) is
/// [`EventLogError::Rejected`], anything else [`EventLogError::Unavailable`].
pub(super) async fn create_topics(
    args: &KafkaArgs,
    client_id: &str,
    topics: &[NewTopic<'_>],
) -> Result<(), EventLogError> {
    use RDKafkaErrorCode as C;
    let cfg = base_config(args, client_id)?;
    let admin: AdminClient<DefaultClientContext> = cfg
        .create()
        .map_err(|e| EventLogError::Other(format!("creating admin client: {e}")))?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(topics, &opts).await.map_err(|e| map_err(&e))? {
        match r {
            Ok(_) | Err((_, C::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                let msg = format!("creating topic {t}: {code}");
                let refused = matches!(
                    code,
                    C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::PolicyViolation
                        | C::InvalidConfig
                        | C::InvalidTopic
                        | C::InvalidReplicationFactor
                );
                return Err(if refused {
                    EventLogError::Rejected(msg)
                } else {
                    EventLogError::Unavailable(msg)
                });
            }
        }
    }
    Ok(())
}
