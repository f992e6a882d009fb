//! Alert notifications: channels (where an alert goes and in which format),
//! how a delivery is signed and retried, and the payload each receiver
//! takes.
//!
//! - this file: the channel ([`ChannelSpec`], [`Channel`]), which alerts it
//!   takes ([`Channel::wants`]) and the idempotency key of an alert record;
//! - [`format`]: the body for each [`Format`]: generic JSON, Slack incoming
//!   webhooks, Microsoft Teams workflow webhooks, PagerDuty Events API v2;
//! - [`sign`]: the HMAC-SHA256 signature header over timestamp and body,
//!   and its check with a replay window (what a receiver does);
//! - [`backoff`]: when each retry goes (exponential, capped, jittered);
//! - [`deliver`]: one alert record to one channel, retried until it is
//!   delivered or its time is up;
//! - [`store`]: channels and dead letters in the results database
//!   ([`postgres`], [`sqlite`]);
//! - [`queue`]: the delivery queue between the alerts topic and the
//!   receivers, one lane per channel ([`queue_postgres`], [`queue_sqlite`]).
//!
//! Guarantees: a channel's secret never leaves the store in an API answer
//! (only whether there is one) nor in a log line; every delivery of the same
//! alert record to the same channel carries the same idempotency key, so a
//! receiver that sees a record twice (a retry after a lost answer, a replay
//! after a restart) can drop the second.

pub mod backoff;
pub mod deliver;
pub mod format;
pub mod postgres;
pub mod queue;
pub mod queue_postgres;
pub mod queue_sqlite;
pub mod sign;
pub mod sqlite;
pub mod store;

use crate::records::{Alert, AlertState};
use crate::rules::Severity;

/// Longest channel id, in bytes.
pub const MAX_CHANNEL_ID_LEN: usize = 64;
/// Longest URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Shortest and longest secret, in characters.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Most groups one channel names.
pub const MAX_GROUPS: usize = 64;

/// What a receiver takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tributary's own JSON ([`format::GenericBody`]), signed.
    Generic,
    /// A Slack incoming webhook (`text` and `blocks`).
    Slack,
    /// A Microsoft Teams workflow webhook (an Adaptive Card message).
    Teams,
    /// PagerDuty Events API v2 (`trigger` / `resolve`, `dedup_key` = alert id);
    /// the channel's secret is the integration's routing key.
    PagerDuty,
}

impl Format {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::PagerDuty => "pagerduty",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "generic" => Ok(Self::Generic),
            "slack" => Ok(Self::Slack),
            "teams" => Ok(Self::Teams),
            "pagerduty" => Ok(Self::PagerDuty),
            other => Err(format!(
                "unknown format {other:?} (expected generic, slack, teams or pagerduty)"
            )),
        }
    }
}

/// What an operator says about a channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelSpec {
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The payload format.
    pub format: Format,
    /// The signing key (generic, Slack, Teams: the signature header);
    /// PagerDuty's routing key. Required for generic and PagerDuty.
    #[serde(default)]
    pub secret: Option<String>,
    /// Only alerts of devices in these groups (empty: every group).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only alerts at least this severe.
    #[serde(default)]
    pub min_severity: Severity,
    /// Whether deliveries are made.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// A field of a channel that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel {channel:?}: {field} {reason}")]
pub struct InvalidChannel {
    /// The channel's id as given.
    pub channel: String,
    /// The field that is wrong (as the API spells it).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ChannelSpec {
    /// Check every field of the channel `id`; the error names the first bad one.
    pub fn validate(&self, id: &str) -> Result<(), InvalidChannel> {
        let bad = |field: &'static str, reason: String| InvalidChannel {
            channel: id.to_owned(),
            field,
            reason,
        };
        if !(id.len() <= MAX_CHANNEL_ID_LEN && crate::model::valid_id(id)) {
            return Err(bad(
                "id",
                format!("must be 1-{MAX_CHANNEL_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
            ));
        }
        let url_ok = self.url.len() <= MAX_URL_LEN
            && reqwest::Url::parse(&self.url)
                .ok()
                .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !url_ok {
            return Err(bad(
                "url",
                format!("must be an http:// or https:// URL of at most {MAX_URL_LEN} bytes"),
            ));
        }
        match &self.secret {
            Some(s) if !SECRET_LEN.contains(&s.chars().count()) || s.chars().any(char::is_control) => {
                return Err(bad(
                    "secret",
                    format!(
                        "must be {}-{} characters without control characters",
                        SECRET_LEN.start(),
                        SECRET_LEN.end()
                    ),
                ));
            }
            None if matches!(self.format, Format::Generic | Format::PagerDuty) => {
                return Err(bad(
                    "secret",
                    format!(
                        "is required for the {} format ({})",
                        self.format.as_str(),
                        if self.format == Format::PagerDuty {
                            "the integration's routing key"
                        } else {
                            "the signing key receivers check"
                        }
                    ),
                ));
            }
            _ => {}
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(bad("groups", format!("at most {MAX_GROUPS} groups")));
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| !(g.len() <= crate::registry::MAX_GROUP_LEN && crate::model::valid_id(g)))
        {
            return Err(bad(
                "groups",
                format!(
                    "group {g:?} must be 1-{} characters of A-Z a-z 0-9 . _ : -",
                    crate::registry::MAX_GROUP_LEN
                ),
            ));
        }
        Ok(())
    }
}

/// A channel as the store holds it. Serialised (for the API) without its
/// secret: `hasSecret` says whether there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its id.
    pub id: String,
    /// What the operator said.
    pub spec: ChannelSpec,
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Channel", 7)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("url", &self.spec.url)?;
        st.serialize_field("format", &self.spec.format)?;
        st.serialize_field("hasSecret", &self.spec.secret.is_some())?;
        st.serialize_field("groups", &self.spec.groups)?;
        st.serialize_field("minSeverity", &self.spec.min_severity)?;
        st.serialize_field("enabled", &self.spec.enabled)?;
        st.end()
    }
}

impl Channel {
    /// Whether this channel takes `alert`, of a device in `group`.
    pub fn wants(&self, alert: &Alert, group: &str) -> bool {
        self.spec.enabled
            && alert.severity >= self.spec.min_severity
            && (self.spec.groups.is_empty() || self.spec.groups.iter().any(|g| g == group))
    }
}

/// The device id test notifications name.
pub const TEST_DEVICE: &str = "tributary-test";

/// A test notification for `channel`, sent by `who` at `now`: an `opened`
/// alert at the channel's least severity (so its filter lets it through)
/// whose device is [`TEST_DEVICE`] and whose reason says it is a test. For
/// PagerDuty, send its [`resolved`](test_alert_resolved) twin after it, so
/// no incident is left open.
pub fn test_alert(channel: &Channel, who: &str, now: chrono::DateTime<chrono::Utc>) -> Alert {
    Alert {
        id: format!("test-{}-{}", channel.id, now.timestamp_millis()),
        device_id: TEST_DEVICE.into(),
        metric: "test".into(),
        model: "test".into(),
        score: 0.0,
        value: 0.0,
        reason: format!("a test notification sent by {who}: this channel works"),
        severity: channel.spec.min_severity,
        state: AlertState::Opened,
        opened_at: now,
        updated_at: now,
    }
}

/// `alert`, resolved a moment later.
pub fn test_alert_resolved(alert: &Alert) -> Alert {
    Alert {
        state: AlertState::Resolved,
        updated_at: alert.updated_at + chrono::Duration::milliseconds(1),
        ..alert.clone()
    }
}

/// The idempotency key of one alert record: the same for every delivery of
/// it (to any channel), different for each state change of the incident.
pub fn idempotency_key(alert: &Alert) -> String {
    format!(
        "{}.{}.{}",
        alert.id,
        alert.state.as_str(),
        alert.updated_at.timestamp_millis()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    pub(crate) fn alert(state: AlertState, severity: Severity) -> Alert {
        let t = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("valid");
        Alert {
            id: "4f1c2a".into(),
            device_id: "freezer-7".into(),
            metric: "temperature".into(),
            model: "threshold".into(),
            score: 1.0,
            value: -4.5,
            reason: "rule 'freezer-warm' (temperature > -10) holds (value -4.5)".into(),
            severity,
            state,
            opened_at: t(0),
            updated_at: t(if state == AlertState::Opened { 0 } else { 300 }),
        }
    }

    pub(crate) fn spec(format: Format) -> ChannelSpec {
        ChannelSpec {
            url: "https://hooks.example.com/tributary".into(),
            format,
            secret: Some("0123456789abcdef-secret".into()),
            groups: vec![],
            min_severity: Severity::Warning,
            enabled: true,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(spec(Format::Generic).validate("ops"), Ok(()));
        let field = |s: ChannelSpec, id: &str| s.validate(id).map_err(|e| e.field);
        assert_eq!(field(spec(Format::Generic), "bad id"), Err("id"));
        for url in ["ftp://x/y", "not a url", "https://", "mailto:a@b.c"] {
            assert_eq!(
                field(
                    ChannelSpec {
                        url: url.into(),
                        ..spec(Format::Slack)
                    },
                    "c"
                ),
                Err("url"),
                "{url}"
            );
        }
        assert_eq!(
            field(
                ChannelSpec {
                    secret: None,
                    ..spec(Format::PagerDuty)
                },
                "c"
            ),
            Err("secret"),
            "PagerDuty needs its routing key"
        );
        assert_eq!(
            field(
                ChannelSpec {
                    secret: None,
                    ..spec(Format::Slack)
                },
                "c"
            ),
            Ok(()),
            "Slack's URL is its secret"
        );
        assert_eq!(
            field(
                ChannelSpec {
                    secret: Some("short".into()),
                    ..spec(Format::Generic)
                },
                "c"
            ),
            Err("secret")
        );
        assert_eq!(
            field(
                ChannelSpec {
                    groups: vec!["no spaces".into()],
                    ..spec(Format::Generic)
                },
                "c"
            ),
            Err("groups")
        );
    }

    #[test]
    fn the_api_never_shows_the_secret() {
        let c = Channel {
            id: "ops".into(),
            spec: spec(Format::Generic),
        };
        let json = serde_json::to_string(&c).expect("json");
        assert!(
            !json.contains("secret\":") && !json.contains("0123456789abcdef"),
            "{json}"
        );
        assert!(json.contains("\"hasSecret\":true"), "{json}");
        let parsed: ChannelSpec = serde_json::from_str(
            r#"{"url":"https://x.example/h","format":"pagerduty","secret":"0123456789abcdef","minSeverity":"critical"}"#,
        )
        .expect("valid");
        assert_eq!(
            (parsed.min_severity, parsed.enabled, parsed.groups.len()),
            (Severity::Critical, true, 0)
        );
        assert!(serde_json::from_str::<ChannelSpec>(r#"{"url":"https://x.example/h","format":"email"}"#).is_err());
    }

    #[test]
    fn a_channel_takes_its_groups_and_severities_and_keys_are_per_state_change() {
        let mut c = Channel {
            id: "ops".into(),
            spec: spec(Format::Generic),
        };
        let warn = alert(AlertState::Opened, Severity::Warning);
        let info = alert(AlertState::Opened, Severity::Info);
        assert!(c.wants(&warn, "freezers") && !c.wants(&info, "freezers"));
        c.spec.groups = vec!["trucks".into()];
        assert!(!c.wants(&warn, "freezers") && c.wants(&warn, "trucks"));
        c.spec.enabled = false;
        assert!(!c.wants(&warn, "trucks"));
        let opened = idempotency_key(&warn);
        let resolved = idempotency_key(&alert(AlertState::Resolved, Severity::Warning));
        assert_ne!(opened, resolved);
        assert_eq!(opened, idempotency_key(&warn.clone()), "stable");
        assert_eq!(opened, "4f1c2a.opened.1800000000000");
    }
}
