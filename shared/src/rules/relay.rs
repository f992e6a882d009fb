//! The rules' relay: publishes every rule's current record to
//! `tributary.rules` whoever changed it (the dashboard, a command against
//! the database). Rules are few (at most [`super::MAX_RULES`] in force), so
//! each step reads them all and publishes those whose revision differs from
//! the one it last published; no outbox is needed.
//!
//! Guarantees: at start every record is published (a new or emptied topic is
//! filled); after that a change is published within one step, about
//! [`RulesRelay::every`] after it committed. A record published twice is
//! harmless: readers keep the highest revision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{RuleError, RuleStore};
use crate::eventlog::{EventLogError, Publisher};
use crate::service::Shutdown;
use crate::telemetry::ErrorChain;

/// Why a relay step failed (the next step tries again).
#[derive(Debug, thiserror::Error)]
pub enum RulesRelayError {
    /// The rules could not be read.
    #[error("reading the alert rules")]
    Rules(#[from] RuleError),
    /// A rule could not be published.
    #[error("publishing alert rule {rule:?}")]
    Publish {
        /// The rule not published.
        rule: String,
        /// Why.
        #[source]
        source: EventLogError,
    },
}

/// The relay's state: what it has published.
pub struct RulesRelay {
    rules: Arc<dyn RuleStore>,
    publisher: Arc<dyn Publisher>,
    topic: String,
    /// Time between steps.
    pub every: Duration,
    published: HashMap<String, i64>,
}

impl RulesRelay {
    /// A relay that has published nothing yet.
    pub fn new(
        rules: Arc<dyn RuleStore>,
        publisher: Arc<dyn Publisher>,
        topic: impl Into<String>,
        every: Duration,
    ) -> Self {
        Self {
            rules,
            publisher,
            topic: topic.into(),
            every,
            published: HashMap::new(),
        }
    }

    /// Publish every record whose revision is not the one last published;
    /// returns how many were published.
    pub async fn step(&mut self) -> Result<usize, RulesRelayError> {
        let records = self.rules.records().await?;
        let due: Vec<_> = records
            .into_iter()
            .filter(|r| self.published.get(&r.id) != Some(&r.revision))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let sent = self
            .publisher
            .publish(&self.topic, due.iter().map(|r| r.to_record()).collect())
            .await;
        let mut published = 0;
        for (rule, delivered) in due.iter().zip(sent) {
            match delivered {
                Ok(_) => {
                    self.published.insert(rule.id.clone(), rule.revision);
                    published += 1;
                }
                Err(source) => {
                    return Err(RulesRelayError::Publish {
                        rule: rule.id.clone(),
                        source,
                    });
                }
            }
        }
        Ok(published)
    }
}

/// Run `relay` until `shutdown`: a step at once, then every
/// [`RulesRelay::every`]. Each step is raced against the stop (with the
/// broker unreachable a publish waits out its delivery timeout); what is
/// left unsent goes at the next step or the next start.
pub async fn run(mut relay: RulesRelay, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut failing = false;
    loop {
        let stepped = tokio::select! {
            _ = &mut stop => return,
            s = relay.step() => s,
        };
        match &stepped {
            Ok(0) => {}
            Ok(n) => tracing::info!(topic = %relay.topic, rules = n, "alert rules published"),
            // Logged once per outage, not at every step.
            Err(e) if !failing => {
                tracing::warn!(topic = %relay.topic, error = %ErrorChain(&e), "publishing alert rules failed; retrying");
            }
            Err(_) => {}
        }
        failing = stepped.is_err();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(relay.every) => {}
        }
    }
}
