//! The body of a delivery, per [`Format`]:
//! - generic: `{"idempotencyKey", "channel", "group", "alert": <the alert record>}`;
//! - Slack incoming webhook: `text` (the fallback) and `blocks`;
//! - Microsoft Teams workflow webhook ("When a Teams webhook request is
//!   received"): a `message` with one Adaptive Card attachment;
//! - PagerDuty Events API v2: `trigger` for an opened or updated incident,
//!   `acknowledge` when an operator acknowledged it on the dashboard and
//!   `resolve` for a resolved one, `dedup_key` = the alert id, so PagerDuty
//!   folds every record of an incident into one incident.
//!
//! Every body is one JSON object; what a person reads starts with the
//! severity, the device and the metric, then the reason analyze gave.

use serde_json::{Value, json};

use super::{Channel, Format, idempotency_key};
use crate::records::{Alert, AlertState};
use crate::rules::Severity;

/// PagerDuty's longest summary, in characters.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

fn state_word(state: AlertState) -> &'static str {
    match state {
        AlertState::Opened => "opened",
        AlertState::Updated => "still open",
        AlertState::Resolved => "resolved",
        AlertState::Acknowledged => "acknowledged",
    }
}

/// One line for people: `[CRITICAL] freezer-7 · temperature = -4.5 (opened): <reason>`.
pub fn headline(alert: &Alert) -> String {
    format!(
        "[{}] {} · {} = {} ({}): {}",
        alert.severity.as_str().to_uppercase(),
        alert.device_id,
        alert.metric,
        alert.value,
        state_word(alert.state),
        alert.reason
    )
}

/// The body `channel` takes for `alert`, of a device in `group`.
pub fn body(channel: &Channel, alert: &Alert, group: &str) -> Value {
    match channel.spec.format {
        Format::Generic => json!({
            "idempotencyKey": idempotency_key(alert),
            "channel": channel.id,
            "group": group,
            "alert": alert,
        }),
        Format::Slack => slack(alert, group),
        Format::Teams => teams(alert, group),
        Format::PagerDuty => pagerduty(channel.spec.secret.as_deref().unwrap_or_default(), alert, group),
    }
}

fn facts(alert: &Alert, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Device", alert.device_id.clone()),
        ("Group", group.to_owned()),
        ("Metric", format!("{} = {}", alert.metric, alert.value)),
        ("Severity", alert.severity.as_str().to_owned()),
        ("State", state_word(alert.state).to_owned()),
        ("Model", alert.model.clone()),
        (
            "Opened",
            alert.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        ("Alert", alert.id.clone()),
    ]
}

fn slack(alert: &Alert, group: &str) -> Value {
    let fields: Vec<Value> = facts(alert, group)
        .into_iter()
        .take(6)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
        .collect();
    json!({
        "text": headline(alert),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", headline(alert))}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("alert {} · Tributary", alert.id)}]},
        ],
    })
}

fn teams(alert: &Alert, group: &str) -> Value {
    let color = match (alert.state, alert.severity) {
        (AlertState::Resolved, _) => "Good",
        (_, Severity::Critical) => "Attention",
        (_, Severity::Warning) => "Warning",
        (_, Severity::Info) => "Accent",
    };
    let facts: Vec<Value> = facts(alert, group)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": headline(alert), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    })
}

fn pagerduty(routing_key: &str, alert: &Alert, group: &str) -> Value {
    let action = match alert.state {
        AlertState::Resolved => "resolve",
        AlertState::Acknowledged => "acknowledge",
        AlertState::Opened | AlertState::Updated => "trigger",
    };
    let summary: String = headline(alert).chars().take(PAGERDUTY_SUMMARY_MAX).collect();
    json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.id,
        "payload": {
            "summary": summary,
            "source": alert.device_id,
            "severity": alert.severity.as_str(),
            "timestamp": alert.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "component": alert.metric,
            "group": group,
            "class": alert.model,
            "custom_details": {"value": alert.value, "score": alert.score, "reason": alert.reason, "openedAt": alert.opened_at},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, spec};

    fn channel(format: Format) -> Channel {
        Channel {
            id: "ops".into(),
            spec: spec(format),
        }
    }

    #[test]
    fn generic_carries_the_record_and_its_key() {
        let a = alert(AlertState::Opened, Severity::Critical);
        let b = body(&channel(Format::Generic), &a, "freezers");
        assert_eq!(b["idempotencyKey"], "4f1c2a.opened.1800000000000");
        assert_eq!(
            (b["channel"].as_str(), b["group"].as_str()),
            (Some("ops"), Some("freezers"))
        );
        assert_eq!(
            serde_json::from_value::<Alert>(b["alert"].clone()).expect("the record"),
            a
        );
    }

    #[test]
    fn slack_and_teams_lead_with_severity_device_and_metric() {
        let a = alert(AlertState::Opened, Severity::Critical);
        let s = body(&channel(Format::Slack), &a, "freezers");
        let text = s["text"].as_str().expect("text");
        assert!(
            text.starts_with("[CRITICAL] freezer-7 · temperature = -4.5 (opened): rule 'freezer-warm'"),
            "{text}"
        );
        assert_eq!(s["blocks"][0]["type"], "section");
        assert_eq!(s["blocks"][1]["fields"].as_array().map(Vec::len), Some(6));
        let t = body(&channel(Format::Teams), &a, "freezers");
        assert_eq!(t["type"], "message");
        let card = &t["attachments"][0];
        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["color"], "Attention");
        assert!(
            card["content"]["body"][1]["facts"]
                .as_array()
                .is_some_and(|f| f.len() == 8)
        );
        let resolved = body(
            &channel(Format::Teams),
            &alert(AlertState::Resolved, Severity::Critical),
            "freezers",
        );
        assert_eq!(resolved["attachments"][0]["content"]["body"][0]["color"], "Good");
    }

    #[test]
    fn pagerduty_triggers_acknowledges_and_resolves_one_incident_per_alert() {
        let c = channel(Format::PagerDuty);
        let opened = body(&c, &alert(AlertState::Opened, Severity::Warning), "freezers");
        assert_eq!(
            (
                opened["routing_key"].as_str(),
                opened["event_action"].as_str(),
                opened["dedup_key"].as_str()
            ),
            (Some("0123456789abcdef-secret"), Some("trigger"), Some("4f1c2a"))
        );
        assert_eq!(opened["payload"]["severity"], "warning");
        assert_eq!(opened["payload"]["source"], "freezer-7");
        let updated = body(&c, &alert(AlertState::Updated, Severity::Warning), "freezers");
        assert_eq!(
            updated["event_action"], "trigger",
            "an update re-triggers the same incident"
        );
        let resolved = body(&c, &alert(AlertState::Resolved, Severity::Warning), "freezers");
        assert_eq!(
            (resolved["event_action"].as_str(), resolved["dedup_key"].as_str()),
            (Some("resolve"), Some("4f1c2a"))
        );
        let acked = body(&c, &alert(AlertState::Acknowledged, Severity::Warning), "freezers");
        assert_eq!(
            (acked["event_action"].as_str(), acked["dedup_key"].as_str()),
            (Some("acknowledge"), Some("4f1c2a")),
            "an operator's acknowledgement acknowledges the incident"
        );
        let mut long = alert(AlertState::Opened, Severity::Info);
        long.reason = "é".repeat(3000);
        let b = body(&c, &long, "g");
        assert_eq!(
            b["payload"]["summary"].as_str().map(|s| s.chars().count()),
            Some(PAGERDUTY_SUMMARY_MAX)
        );
    }
}
