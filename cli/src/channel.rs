//! `tributary channel …`: alert notification channels from the command line
//! (list with each channel's backlog, put, delete, test, dead letters,
//! resend), on the results database they live in (`DATABASE_URL`:
//! PostgreSQL, or the SQLite file of `tributary dev`). Every command
//! migrates that database first, as process does at start.
//!
//! Process's notifier reads the channels at each batch and its dispatcher
//! before each attempt, so a change needs no restart and nothing to publish.
//! A channel's secret is read from `TRIBUTARY_CHANNEL_SECRET` (or
//! `--secret`), never printed: a listing says only whether there is one.
//!
//! Output: a channel, a test's outcome and a resend's counts as one JSON
//! object; listings as tables (or NDJSON with `--json`). Errors go to
//! stderr with a non-zero exit; a test that the receiver did not accept
//! exits non-zero too, so scripts can check a channel.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::deliver::Deliverer;
use tributary_shared::notify::queue::Backlog;
use tributary_shared::notify::store::{ChannelStore, DeadLetter, MAX_DEAD_LETTERS};
use tributary_shared::notify::{Channel, ChannelSpec, Format};
use tributary_shared::rules::Severity;

/// Arguments of `tributary channel`.
#[derive(clap::Args)]
pub struct Args {
    /// The results database the channels are in (postgres://… or sqlite://PATH).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every channel, with what is queued for it and its dead letters.
    List {
        /// One JSON object per channel instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a channel.
    Put {
        /// Channel id.
        id: String,
        /// Where deliveries are POSTed.
        #[arg(long)]
        url: String,
        /// generic, slack, teams or pagerduty.
        #[arg(long, default_value = "generic")]
        format: Format,
        /// The signing key (PagerDuty: the routing key); required for
        /// generic and pagerduty.
        #[arg(long, env = "TRIBUTARY_CHANNEL_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Only alerts of devices in this group (repeat for more; none: every group).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Only alerts at least this severe: info, warning or critical.
        #[arg(long, default_value = "warning")]
        min_severity: Severity,
        /// Keep the channel but make no deliveries (its queue waits).
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a channel, its queue and its dead letters.
    Delete {
        /// Channel id.
        id: String,
    },
    /// Send a channel one test notification now and print what the receiver did.
    Test {
        /// Channel id.
        id: String,
    },
    /// A channel's dead letters, newest first.
    DeadLetters {
        /// Channel id.
        id: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per letter instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters again (to the end of the channel's queue).
    Resend {
        /// Channel id.
        id: String,
        /// Only the letter with this key (repeat for more; none: all, oldest first).
        #[arg(long = "key")]
        keys: Vec<String>,
    },
}

/// Run one channel command.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let registry = tributary_shared::registry::open(&a.database_url, 2)
        .await
        .context("opening the results database (DATABASE_URL)")?;
    registry.migrate().await.context("migrating the results database")?;
    let store: Arc<dyn ChannelStore> = tributary_shared::notify::store::open(&a.database_url, 2)
        .await
        .context("opening the channels (DATABASE_URL)")?;
    let now = chrono::Utc::now();
    match a.command {
        Command::List { json } => {
            let channels = store.list().await?;
            let backlog = store.backlog().await?;
            let mut listed = Vec::with_capacity(channels.len());
            for c in channels {
                let (_, dead) = store.dead_letters(&c.id, 1).await?;
                let queued = backlog.iter().find(|b| b.channel_id == c.id).cloned();
                listed.push((c, queued, dead));
            }
            if json {
                for (c, queued, dead) in &listed {
                    let mut v = serde_json::to_value(c)?;
                    v["backlog"] = serde_json::to_value(queued)?;
                    v["deadLetters"] = (*dead).into();
                    println!("{v}");
                }
            } else {
                print!("{}", channel_table(&listed));
            }
            Ok(())
        }
        Command::Put {
            id,
            url,
            format,
            secret,
            groups,
            min_severity,
            disabled,
        } => {
            let spec = ChannelSpec {
                url,
                format,
                secret,
                groups,
                min_severity,
                enabled: !disabled,
            };
            let (channel, written) = store.put(&id, &spec, now).await?;
            let mut v = serde_json::to_value(&channel)?;
            v["written"] = format!("{written:?}").to_lowercase().into();
            println!("{v}");
            Ok(())
        }
        Command::Delete { id } => {
            store.delete(&id).await?;
            println!("{}", serde_json::json!({ "deleted": id }));
            Ok(())
        }
        Command::Test { id } => {
            let channel = store
                .get(&id)
                .await?
                .with_context(|| format!("channel {id:?} does not exist"))?;
            let deliverer = Deliverer::new(Backoff::default(), Duration::from_secs(10))?;
            let who = format!("tributary channel test ({})", whoami());
            let outcome = deliverer.send_test(&channel, &who, now).await;
            println!("{}", serde_json::to_string(&outcome)?);
            anyhow::ensure!(
                outcome.delivered,
                "channel {id:?} did not accept the test notification: {}",
                outcome.error.as_deref().unwrap_or("no answer")
            );
            Ok(())
        }
        Command::DeadLetters { id, limit, json } => {
            anyhow::ensure!(store.get(&id).await?.is_some(), "channel {id:?} does not exist");
            let (letters, total) = store.dead_letters(&id, limit.min(MAX_DEAD_LETTERS)).await?;
            if json {
                for l in &letters {
                    println!("{}", serde_json::to_string(l)?);
                }
            } else {
                print!("{}", letter_table(&letters));
                if total > letters.len() as u64 {
                    eprintln!("{} of {total} shown (--limit)", letters.len());
                }
            }
            Ok(())
        }
        Command::Resend { id, keys } => {
            let keys = (!keys.is_empty()).then_some(keys);
            let done = store.resend(&id, keys.as_deref(), now).await?;
            println!("{}", serde_json::to_string(&done)?);
            Ok(())
        }
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "an operator".into())
}

fn channel_table(listed: &[(Channel, Option<Backlog>, u64)]) -> String {
    let rows: Vec<[String; 8]> = listed
        .iter()
        .map(|(c, backlog, dead)| {
            [
                c.id.clone(),
                c.spec.format.as_str().to_owned(),
                if c.spec.enabled { "enabled" } else { "disabled" }.to_owned(),
                c.spec.min_severity.as_str().to_owned(),
                if c.spec.groups.is_empty() {
                    "*".to_owned()
                } else {
                    c.spec.groups.join(",")
                },
                backlog.as_ref().map_or(0, |b| b.queued).to_string(),
                dead.to_string(),
                backlog
                    .as_ref()
                    .and_then(|b| b.last_error.clone())
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect(),
            ]
        })
        .collect();
    crate::table::render(
        ["ID", "FORMAT", "STATE", "MIN", "GROUPS", "QUEUED", "DEAD", "LAST ERROR"],
        &rows,
    )
}

fn letter_table(letters: &[DeadLetter]) -> String {
    let rows: Vec<[String; 7]> = letters
        .iter()
        .map(|l| {
            [
                l.failed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                l.key.clone(),
                l.device_id.clone(),
                l.severity.as_str().to_owned(),
                l.attempts.to_string(),
                if l.alert.is_some() { "yes" } else { "no" }.to_owned(),
                l.error.chars().take(60).collect(),
            ]
        })
        .collect();
    crate::table::render(
        [
            "FAILED AT",
            "KEY",
            "DEVICE",
            "SEVERITY",
            "ATTEMPTS",
            "RESENDABLE",
            "ERROR",
        ],
        &rows,
    )
}
