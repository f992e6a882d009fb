//! Alert rules per device group or device, set at run time: "in group
//! `freezers`, `temperature > -10 for 5m` is critical". Operators edit them
//! (dashboard API and page); analyze applies them from the next reading on,
//! with no restart.
//!
//! One trait, [`RuleStore`], with two backends in the results database that
//! pass the same contract suite (`tributary-testkit`):
//! - [`postgres::PgRules`] (table `alert_rules`, `shared/migrations`);
//! - [`sqlite::SqliteRules`], the embedded one (`shared/migrations-sqlite`);
//! - [`relay`]: publishes every rule's current record to the compacted topic
//!   `tributary.rules` (key: rule id);
//! - [`view`]: the rules as analyze holds them, from that topic.
//!
//! Guarantees of every backend: every change of a rule moves its `revision`
//! up by one (a delete too: the row is kept, marked deleted, so a follower
//! sees a newer record than the last one it had, and an id used again
//! continues its revisions); writing a rule exactly as it is changes nothing,
//! not even the revision; at most [`MAX_RULES`] rules exist at once.
//! `TRIBUTARY_RULES` (analyze's setting) stays the default for every group
//! that has no rule here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::results::StoreError;

pub mod postgres;
pub mod relay;
pub mod sqlite;
pub mod view;

pub use postgres::PgRules;
pub use sqlite::SqliteRules;

/// Most rules that exist at once.
pub const MAX_RULES: usize = 1000;
/// Longest hold time, in seconds (a week).
pub const MAX_HOLD_SECONDS: u32 = 7 * 86_400;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// Longest rule id, in bytes.
pub const MAX_RULE_ID_LEN: usize = 64;

/// How urgent an alert is: what notifications filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth a look soon (every model alert).
    #[default]
    Warning,
    /// Someone should act now.
    Critical,
}

impl Severity {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// One byte, for analyze's state.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What [`Severity::code`] gave.
    pub fn from_code(code: u8) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Critical]
            .get(usize::from(code))
            .copied()
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown severity {other:?} (expected info, warning or critical)"
            )),
        }
    }
}

impl TryFrom<String> for Severity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A rule's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Condition {
    /// `>`
    #[serde(rename = ">")]
    Above,
    /// `>=`
    #[serde(rename = ">=")]
    AtLeast,
    /// `<`
    #[serde(rename = "<")]
    Below,
    /// `<=`
    #[serde(rename = "<=")]
    AtMost,
}

impl Condition {
    /// The operator as written in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::AtLeast => ">=",
            Self::Below => "<",
            Self::AtMost => "<=",
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            ">" => Ok(Self::Above),
            ">=" => Ok(Self::AtLeast),
            "<" => Ok(Self::Below),
            "<=" => Ok(Self::AtMost),
            other => Err(format!("unknown condition {other:?} (expected >, >=, < or <=)")),
        }
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every device of a group (see the device registry).
    Group(String),
    /// One device.
    Device(String),
}

impl Scope {
    /// `"group"` or `"device"`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Group(_) => "group",
            Self::Device(_) => "device",
        }
    }

    /// The group or device id.
    pub fn name(&self) -> &str {
        match self {
            Self::Group(s) | Self::Device(s) => s,
        }
    }

    /// From the stored kind and name.
    pub fn from_parts(kind: &str, name: String) -> Result<Self, String> {
        match kind {
            "group" => Ok(Self::Group(name)),
            "device" => Ok(Self::Device(name)),
            other => Err(format!("unknown rule scope {other:?}")),
        }
    }
}

/// What an operator writes: a rule without its id (the id is the path of
/// `PUT /api/rules/{id}`) and bookkeeping.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// The metric the rule watches.
    pub metric: String,
    /// The comparison.
    pub condition: Condition,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold, in event time, before the rule
    /// fires (0: at once).
    #[serde(default, deserialize_with = "whole_seconds")]
    pub hold_seconds: u32,
    /// The severity of the alerts it opens.
    #[serde(default)]
    pub severity: Severity,
    /// The group it applies to (exactly one of `group` and `device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The device it applies to (exactly one of `group` and `device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A whole number of seconds, written `300` or `300.0` (JSON does not tell
/// them apart, and JSON Schema's `integer` takes both).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = <f64 as serde::Deserialize>::deserialize(d)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(serde::de::Error::custom(format!(
            "holdSeconds must be a whole number of seconds, 0 or more, not {n}"
        )))
    }
}

impl RuleSpec {
    /// What it applies to (call after [`RuleSpec::validate`]).
    pub fn scope(&self) -> Scope {
        match (&self.group, &self.device) {
            (_, Some(d)) => Scope::Device(d.clone()),
            (Some(g), None) => Scope::Group(g.clone()),
            (None, None) => Scope::Group(crate::registry::DEFAULT_GROUP.into()),
        }
    }

    /// The condition as analyze writes it in alert reasons:
    /// `temperature > -10 for 5m`.
    pub fn condition_text(&self) -> String {
        let hold = match self.hold_seconds {
            0 => String::new(),
            s if s % 3600 == 0 => format!(" for {}h", s / 3600),
            s if s % 60 == 0 => format!(" for {}m", s / 60),
            s => format!(" for {s}s"),
        };
        format!("{} {} {}{hold}", self.metric, self.condition.as_str(), self.threshold)
    }

    /// Check every field of the rule `id`; the error names the first bad one.
    pub fn validate(&self, id: &str) -> Result<(), InvalidRule> {
        let bad = |field: &'static str, reason: String| InvalidRule {
            rule: id.to_owned(),
            field,
            reason,
        };
        if !valid_rule_id(id) {
            return Err(bad(
                "id",
                format!("must be 1-{MAX_RULE_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
            ));
        }
        if !crate::model::valid_metric_name(&self.metric) {
            return Err(bad("metric", "must be 1-64 characters of A-Z a-z 0-9 . _ -".into()));
        }
        if !self.threshold.is_finite() {
            return Err(bad("threshold", "must be a finite number".into()));
        }
        if self.hold_seconds > MAX_HOLD_SECONDS {
            return Err(bad(
                "holdSeconds",
                format!("must be at most {MAX_HOLD_SECONDS} (a week)"),
            ));
        }
        match (&self.group, &self.device) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad("group", "give exactly one of group and device".into()));
            }
            (Some(g), None) if !(g.len() <= crate::registry::MAX_GROUP_LEN && crate::model::valid_id(g)) => {
                return Err(bad(
                    "group",
                    format!(
                        "must be 1-{} characters of A-Z a-z 0-9 . _ : -",
                        crate::registry::MAX_GROUP_LEN
                    ),
                ));
            }
            (None, Some(d)) if !crate::model::valid_id(d) => {
                return Err(bad("device", "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into()));
            }
            _ => {}
        }
        if let Some(text) = &self.description
            && (text.chars().count() > MAX_DESCRIPTION_LEN || text.chars().any(|c| c.is_control() && c != '\n'))
        {
            return Err(bad(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters without control characters"),
            ));
        }
        Ok(())
    }
}

/// Whether `s` can be a rule id.
pub fn valid_rule_id(s: &str) -> bool {
    s.len() <= MAX_RULE_ID_LEN && crate::model::valid_id(s)
}

/// A field of a rule that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule:?}: {field} {reason}")]
pub struct InvalidRule {
    /// The rule's id as given.
    pub rule: String,
    /// The field that is wrong (as the API spells it).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// A rule as the store holds it and `tributary.rules` carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRule {
    /// Its id (also the topic record's key).
    pub id: String,
    /// What the operator wrote.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Moves up by one with every change (a delete too).
    pub revision: i64,
    /// When it was first written.
    #[serde(with = "crate::model::millis_rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(with = "crate::model::millis_rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Deleted: kept so followers see the deletion as a newer revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// What [`RuleStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The rule did not exist (or had been deleted).
    Created,
    /// It existed and changed.
    Updated,
    /// It existed exactly so: nothing was written.
    Unchanged,
}

/// Errors of the rule store, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// No rule with this id.
    #[error("rule {0:?} does not exist")]
    NotFound(String),
    /// A field cannot be stored; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidRule),
    /// Creating it would exceed [`MAX_RULES`].
    #[error("there are {MAX_RULES} rules already (the most there can be); delete one first")]
    TooMany,
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RuleError {
    /// The HTTP status an API answers this error with.
    pub fn status_code(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) | Self::Store(StoreError::Rejected(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooMany => StatusCode::CONFLICT,
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<sqlx::Error> for RuleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The rules, in the results database.
#[async_trait]
pub trait RuleStore: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Create or replace the rule `id` (validated first; nothing is written
    /// when it is invalid, when it is exactly as stored, or when creating
    /// it would exceed [`MAX_RULES`]).
    async fn put(&self, id: &str, spec: &RuleSpec, now: DateTime<Utc>) -> Result<(AlertRule, Written), RuleError>;

    /// One rule, if it exists (deleted ones do not).
    async fn get(&self, id: &str) -> Result<Option<AlertRule>, RuleError>;

    /// Every rule that exists, by id.
    async fn list(&self) -> Result<Vec<AlertRule>, RuleError>;

    /// Delete a rule (kept, marked deleted, at its next revision); returns it.
    async fn delete(&self, id: &str, now: DateTime<Utc>) -> Result<AlertRule, RuleError>;

    /// Every rule record there is, deleted ones too: what the relay publishes.
    async fn records(&self) -> Result<Vec<AlertRule>, RuleError>;
}

/// Open the rule store a results-store URL names: `postgres://…` (lazily
/// connecting) or `sqlite://PATH` (created if missing).
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn RuleStore>, RuleError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteRules::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgRules::connect_lazy(url, max_connections)?))
    } else {
        let scheme = url.split(':').next().unwrap_or("");
        Err(RuleError::Store(StoreError::Unavailable(format!(
            "unsupported database URL scheme {scheme:?} (expected postgres:// or sqlite://)"
        ))))
    }
}

/// The decision every backend makes on a `put`, from the stored row (if any).
pub(crate) fn decide(stored: Option<&AlertRule>, spec: &RuleSpec) -> Written {
    match stored {
        None => Written::Created,
        Some(r) if r.deleted => Written::Created,
        Some(r) if r.spec == *spec => Written::Unchanged,
        Some(_) => Written::Updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuleSpec {
        RuleSpec {
            metric: "temperature".into(),
            condition: Condition::Above,
            threshold: -10.0,
            hold_seconds: 300,
            severity: Severity::Critical,
            group: Some("freezers".into()),
            device: None,
            description: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(spec().validate("freezer-warm"), Ok(()));
        let field = |s: RuleSpec, id: &str| s.validate(id).map_err(|e| e.field);
        assert_eq!(field(spec(), "bad id"), Err("id"));
        assert_eq!(field(spec(), &"x".repeat(65)), Err("id"));
        assert_eq!(
            field(
                RuleSpec {
                    metric: "a b".into(),
                    ..spec()
                },
                "r"
            ),
            Err("metric")
        );
        assert_eq!(
            field(
                RuleSpec {
                    threshold: f64::NAN,
                    ..spec()
                },
                "r"
            ),
            Err("threshold")
        );
        assert_eq!(
            field(
                RuleSpec {
                    hold_seconds: MAX_HOLD_SECONDS + 1,
                    ..spec()
                },
                "r"
            ),
            Err("holdSeconds")
        );
        assert_eq!(
            field(
                RuleSpec {
                    device: Some("d".into()),
                    ..spec()
                },
                "r"
            ),
            Err("group"),
            "both a group and a device"
        );
        assert_eq!(field(RuleSpec { group: None, ..spec() }, "r"), Err("group"), "neither");
        assert_eq!(
            field(
                RuleSpec {
                    group: None,
                    device: Some("no spaces".into()),
                    ..spec()
                },
                "r"
            ),
            Err("device")
        );
        assert_eq!(
            field(
                RuleSpec {
                    description: Some("bell\u{7}".into()),
                    ..spec()
                },
                "r"
            ),
            Err("description")
        );
    }

    #[test]
    fn the_api_shape_is_camel_case_and_strict() {
        let json = r#"{"metric":"temperature","condition":">","threshold":-10,"holdSeconds":300,"severity":"critical","group":"freezers"}"#;
        let s: RuleSpec = serde_json::from_str(json).expect("valid");
        assert_eq!(s, spec());
        assert_eq!(s.condition_text(), "temperature > -10 for 5m");
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"metric":"t","condition":"=","threshold":1,"group":"g"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"metric":"t","condition":">","threshold":1,"group":"g","x":1}"#)
                .is_err(),
            "unknown fields are refused"
        );
        let whole: RuleSpec =
            serde_json::from_str(r#"{"metric":"t","condition":">","threshold":1,"holdSeconds":300.0,"group":"g"}"#)
                .expect("300.0 is a whole number of seconds");
        assert_eq!(whole.hold_seconds, 300);
        for bad in ["300.5", "-1", "1e20", "\"300\""] {
            let json = format!(r#"{{"metric":"t","condition":">","threshold":1,"holdSeconds":{bad},"group":"g"}}"#);
            assert!(serde_json::from_str::<RuleSpec>(&json).is_err(), "{bad}");
        }
        let defaults: RuleSpec =
            serde_json::from_str(r#"{"metric":"t","condition":"<=","threshold":0.5,"device":"d"}"#).expect("valid");
        assert_eq!((defaults.hold_seconds, defaults.severity), (0, Severity::Warning));
        assert_eq!(defaults.scope(), Scope::Device("d".into()));
        assert_eq!(defaults.condition_text(), "t <= 0.5");
        assert_eq!(
            RuleSpec {
                hold_seconds: 90,
                ..spec()
            }
            .condition_text(),
            "temperature > -10 for 90s"
        );
    }

    #[test]
    fn a_put_is_created_updated_or_unchanged() {
        let now = Utc::now();
        let stored = AlertRule {
            id: "r".into(),
            spec: spec(),
            revision: 3,
            created_at: now,
            updated_at: now,
            deleted: false,
        };
        assert_eq!(decide(None, &spec()), Written::Created);
        assert_eq!(decide(Some(&stored), &spec()), Written::Unchanged);
        let other = RuleSpec {
            threshold: -5.0,
            ..spec()
        };
        assert_eq!(decide(Some(&stored), &other), Written::Updated);
        let deleted = AlertRule {
            deleted: true,
            ..stored
        };
        assert_eq!(decide(Some(&deleted), &spec()), Written::Created);
        assert_eq!(Severity::from_code(Severity::Critical.code()), Some(Severity::Critical));
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
    }
}
