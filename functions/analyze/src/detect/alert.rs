//! The alert state machine: turns a series' scores into incidents.
//!
//! Guarantees per (device, metric) series:
//! - At most one incident is open at a time (de-duplication): a score at or
//!   above `open_at` opens one ([`AlertState::Opened`]) only if none is open
//!   and the `cooldown` since the last resolution has passed.
//! - While open, an [`AlertState::Updated`] record is emitted at most every
//!   `update_every` (event time), and only while the score is still at or
//!   above `resolve_below`.
//! - It resolves ([`AlertState::Resolved`]) once the score has stayed below
//!   `resolve_below` for `resolve_after`.
//! - Every record of an incident carries the same id, a hash of device,
//!   metric, model and the opening event time, so replays overwrite.
//! - When the series' state is evicted ([`AlertTracker::evict`], see
//!   [`crate::engine`]) an open incident is resolved with a reason saying so,
//!   rather than left open forever.
//!
//! Memory per series: a few timestamps and the model name.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use tributary_shared::rules::Severity;

use crate::records::{Alert, AlertState};
use crate::state::codec::{Corrupt, Reader, Writer};

/// Alerting parameters.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// Score that opens an incident.
    pub open_at: f64,
    /// Scores below this count as "calm".
    pub resolve_below: f64,
    /// How long scores must stay calm before the incident resolves.
    pub resolve_after: Duration,
    /// Least time between two `updated` records.
    pub update_every: Duration,
    /// Least time between a resolution and the next opening.
    pub cooldown: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            open_at: 0.9,
            resolve_below: 0.5,
            resolve_after: Duration::minutes(5),
            update_every: Duration::minutes(1),
            cooldown: Duration::minutes(1),
        }
    }
}

/// The deterministic id of an incident: the first 128 bits of a SHA-256 over
/// device, metric, model and opening time (ms), in hex.
pub fn alert_id(device: &str, metric: &str, model: &str, opened_at: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    for part in [device, metric, model] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(opened_at.timestamp_millis().to_be_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Debug)]
struct Incident {
    id: String,
    model: String,
    severity: Severity,
    opened_at: DateTime<Utc>,
    last_sent: DateTime<Utc>,
    calm_since: Option<DateTime<Utc>>,
}

/// The alert state of one series.
#[derive(Clone, Debug, Default)]
pub struct AlertTracker {
    /// Boxed: every series has a tracker, few have an incident open, and an
    /// inline incident would cost each series 80 bytes.
    open: Option<Box<Incident>>,
    resolved_at: Option<DateTime<Utc>>,
}

impl AlertTracker {
    /// No incident.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an incident is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Feed one scored value (event-time order per series); returns the
    /// record to publish, if any. `reason` is called only for a record;
    /// `severity` is the incident's if this value opens one (every record of
    /// an incident keeps the severity it opened with).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        cfg: &AlertConfig,
        device: &str,
        metric: &str,
        t: DateTime<Utc>,
        value: f64,
        score: f64,
        (model, severity): (&str, Severity),
        reason: impl Fn() -> String,
    ) -> Option<Alert> {
        let make = |inc: &Incident, state: AlertState| Alert {
            id: inc.id.clone(),
            device_id: device.to_owned(),
            metric: metric.to_owned(),
            model: inc.model.clone(),
            score,
            value,
            reason: reason(),
            severity: inc.severity,
            state,
            opened_at: inc.opened_at,
            updated_at: t,
        };
        match &mut self.open {
            None => {
                let cooled = self.resolved_at.is_none_or(|r| t - r >= cfg.cooldown);
                if score >= cfg.open_at && cooled {
                    let inc = Box::new(Incident {
                        id: alert_id(device, metric, model, t),
                        model: model.to_owned(),
                        severity,
                        opened_at: t,
                        last_sent: t,
                        calm_since: None,
                    });
                    let alert = make(&inc, AlertState::Opened);
                    self.open = Some(inc);
                    return Some(alert);
                }
                None
            }
            Some(inc) => {
                if score >= cfg.resolve_below {
                    inc.calm_since = None;
                    if t - inc.last_sent >= cfg.update_every {
                        inc.last_sent = t;
                        return Some(make(inc, AlertState::Updated));
                    }
                    return None;
                }
                let since = *inc.calm_since.get_or_insert(t);
                if t - since >= cfg.resolve_after {
                    let alert = make(inc, AlertState::Resolved);
                    self.open = None;
                    self.resolved_at = Some(t);
                    return Some(alert);
                }
                None
            }
        }
    }
}

impl AlertTracker {
    /// The series' state is being dropped: resolve the open incident, if any,
    /// at `t` (the series' newest event time) with score 0, the last `value`
    /// and `why` as the reason.
    pub fn evict(&mut self, device: &str, metric: &str, t: DateTime<Utc>, value: f64, why: &str) -> Option<Alert> {
        let inc = *self.open.take()?;
        self.resolved_at = Some(t);
        Some(Alert {
            id: inc.id,
            device_id: device.to_owned(),
            metric: metric.to_owned(),
            model: inc.model,
            score: 0.0,
            value,
            reason: why.to_owned(),
            severity: inc.severity,
            state: AlertState::Resolved,
            opened_at: inc.opened_at,
            updated_at: t.max(inc.opened_at),
        })
    }
}

impl AlertTracker {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.bool(self.open.is_some());
        if let Some(inc) = &self.open {
            w.str(&inc.id);
            w.str(&inc.model);
            w.u8(inc.severity.code());
            w.time(inc.opened_at);
            w.time(inc.last_sent);
            w.opt_time(inc.calm_since);
        }
        w.opt_time(self.resolved_at);
    }

    /// Read what [`AlertTracker::save`] wrote, in state format `version`
    /// (3 had no severity: such an incident is a warning).
    pub(crate) fn load(r: &mut Reader<'_>, version: u8) -> Result<Self, Corrupt> {
        let open = if r.bool()? {
            Some(Box::new(Incident {
                id: r.str()?.to_owned(),
                model: r.str()?.to_owned(),
                severity: if version >= 4 {
                    Severity::from_code(r.u8()?).ok_or(Corrupt)?
                } else {
                    Severity::Warning
                },
                opened_at: r.time()?,
                last_sent: r.time()?,
                calm_since: r.opt_time()?,
            }))
        } else {
            None
        };
        Ok(Self {
            open,
            resolved_at: r.opt_time()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("valid")
    }

    #[test]
    fn one_incident_opened_updated_resolved_with_a_stable_id_then_cooldown() {
        let cfg = AlertConfig::default();
        let mut a = AlertTracker::new();
        let mut out = Vec::new();
        // High from 100 s to 300 s (every 10 s), calm until 620 s, high again after.
        for s in (0..=800).step_by(10) {
            let score = if (100..=300).contains(&s) || s >= 620 {
                0.95
            } else {
                0.1
            };
            if let Some(al) = a.observe(
                &cfg,
                "d",
                "temp",
                t(s),
                s as f64,
                score,
                ("spike", Severity::Warning),
                || "r".into(),
            ) {
                out.push(al);
            }
        }
        let states: Vec<_> = out.iter().map(|a| (a.state, a.updated_at.timestamp())).collect();
        assert_eq!(
            states,
            vec![
                (AlertState::Opened, 100),
                (AlertState::Updated, 160),
                (AlertState::Updated, 220),
                (AlertState::Updated, 280),
                // Calm from 310 s, resolved 5 min later.
                (AlertState::Resolved, 610),
                // High again at 620 s, but the 1 min cooldown holds it until 670 s.
                (AlertState::Opened, 670),
                (AlertState::Updated, 730),
                (AlertState::Updated, 790),
            ]
        );
        assert!(out[..5].iter().all(|x| x.id == out[0].id && x.opened_at == t(100)));
        assert_eq!(out[0].id, alert_id("d", "temp", "spike", t(100)));
        assert_ne!(out[5].id, out[0].id, "a new incident gets a new id");
        assert_eq!(out[5].id, alert_id("d", "temp", "spike", t(670)));
    }
}
