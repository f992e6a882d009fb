//! `tributary device …`: the device registry from the command line (add,
//! import, list, show, disable, enable, rotate-key), on the results database
//! the registry lives in (`DATABASE_URL`: PostgreSQL, or the SQLite file of
//! `tributary dev`). Every command migrates that database first, as process
//! does at start, so it works on a database nothing has written yet.
//!
//! Every change is then published to the registry topic (`tributary.devices`
//! on `--kafka-brokers`), which every ingest replica follows: that is what
//! makes a disabled device or a rotated key refused everywhere within about
//! a second. If publishing fails, the database has the change and the
//! command says so and fails; `tributary device publish` sends the whole
//! registry again (records carry revisions, so a repeat is harmless).
//!
//! Output is for people and scripts alike: a device is printed as one JSON
//! object, a listing as a table (or NDJSON with `--json`), an import as its
//! counts. Errors go to stderr with a non-zero exit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::registry::import::{self, Format};
use tributary_shared::registry::relay::{Relay, RelaySettings};
use tributary_shared::registry::view;
use tributary_shared::registry::{DeviceRegistry, DeviceStatus, NewDevice, RegisteredDevice, RegistryQuery};

/// Arguments of `tributary device`.
#[derive(clap::Args)]
pub struct Args {
    /// The results database the registry is in (postgres://… or sqlite://PATH).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Where ingest reads the registry from.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The registry topic (compacted; key: device id).
    #[arg(long, env = "TRIBUTARY_DEVICES_TOPIC", default_value = tributary_shared::topics::DEVICES)]
    devices_topic: String,
    /// Change the database only, and leave publishing to the relay of the
    /// process function that uses it (as with `tributary dev`, whose event
    /// log is inside its own process).
    #[arg(long)]
    no_publish: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Register one device (active, key version 0).
    Add {
        /// Device id, as in its tokens.
        id: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// Its group (default: "default").
        #[arg(long)]
        group: Option<String>,
        /// A tag, key=value (repeat for more).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Register or describe many devices from a CSV or NDJSON file, all or nothing.
    Import {
        /// The file (CSV with a header row: id[,name][,group][,tags]; or one JSON object per line).
        path: PathBuf,
        /// The file's format (default: from its extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List devices by id, a page at a time.
    List {
        /// Part of the id or name.
        #[arg(long)]
        search: Option<String>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Only devices in this state (active or disabled).
        #[arg(long)]
        state: Option<DeviceStatus>,
        /// Only ids after this one (the last id of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (up to 10,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one device.
    Show {
        /// Device id.
        id: String,
    },
    /// Refuse a device's readings from now on.
    Disable {
        /// Device id.
        id: String,
    },
    /// Accept a disabled device's readings again.
    Enable {
        /// Device id.
        id: String,
    },
    /// Publish every registered device to the registry topic again (after a
    /// change whose publishing failed, or to fill a new topic).
    Publish,
    /// Move a device to a new key version: tokens of its old key stop working.
    RotateKey {
        /// Device id.
        id: String,
        /// Also print the new device key (derived from the fleet key) and a token of it.
        #[arg(long)]
        show_key: bool,
        /// Fleet key (the same secret ingest is configured with), for --show-key.
        #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, hide_default_value = true, default_value = tributary_ingest::config::DEV_FLEET_KEY)]
        fleet_key: String,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// Run one registry command.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let registry = tributary_shared::registry::open(&a.database_url, 2)
        .await
        .context("opening the registry's database (DATABASE_URL)")?;
    registry.migrate().await.context("migrating the registry's database")?;
    let topic = Topic {
        kafka: a.kafka,
        name: a.devices_topic,
        enabled: !a.no_publish,
    };
    let now = chrono::Utc::now();
    match a.command {
        Command::Add { id, name, group, tags } => {
            let mut map = BTreeMap::new();
            for (k, v) in tags {
                anyhow::ensure!(map.insert(k.clone(), v).is_none(), "tag {k:?} given twice");
            }
            let device = NewDevice {
                id,
                name,
                group,
                tags: map,
            };
            let d = registry.add(&device, now).await?;
            print_device(&d)?;
            topic.publish(&[d]).await
        }
        Command::Import { path, format } => {
            let format = format.or_else(|| Format::from_path(&path)).with_context(|| {
                format!(
                    "{}: cannot tell the format from the extension (use --format csv or --format ndjson)",
                    path.display()
                )
            })?;
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let devices =
                import::parse(&text, format).with_context(|| format!("{}: nothing was imported", path.display()))?;
            let outcome = registry.import(&devices, now).await.context("nothing was imported")?;
            println!("{}", serde_json::to_string(&outcome)?);
            if outcome.created + outcome.updated > 0 {
                topic.publish_all(registry.clone()).await?;
            }
            Ok(())
        }
        Command::Publish => {
            anyhow::ensure!(topic.enabled, "publish with --no-publish does nothing");
            let n = topic.publish_all(registry.clone()).await?;
            println!("{}", serde_json::json!({ "published": n }));
            Ok(())
        }
        Command::List {
            search,
            group,
            state,
            after,
            limit,
            json,
        } => {
            let query = RegistryQuery {
                search,
                group,
                status: state,
                after,
                limit,
            };
            let devices = registry.list(&query).await?;
            if json {
                for d in &devices {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                print!("{}", table(&devices));
            }
            Ok(())
        }
        Command::Show { id } => match registry.get(&id).await? {
            Some(d) => print_device(&d),
            None => anyhow::bail!("device {id:?} is not registered"),
        },
        Command::Disable { id } => {
            let d = registry.set_status(&id, DeviceStatus::Disabled, now).await?;
            print_device(&d)?;
            topic.publish(&[d]).await
        }
        Command::Enable { id } => {
            let d = registry.set_status(&id, DeviceStatus::Active, now).await?;
            print_device(&d)?;
            topic.publish(&[d]).await
        }
        Command::RotateKey {
            id,
            show_key,
            fleet_key,
        } => {
            let d = registry.rotate_key(&id, now).await?;
            print_device(&d)?;
            if show_key {
                let key = FleetKey::new(&fleet_key).device_key_at(&d.id, d.key_version);
                eprintln!("device key (base64), version {}: {}", d.key_version, key.to_base64());
                eprintln!("token (24 h): {}", key.token(&d.id, now_unix() + 86_400));
            }
            topic.publish(&[d]).await
        }
    }
}

/// The registry topic and how to reach it.
struct Topic {
    kafka: KafkaArgs,
    name: String,
    /// False with `--no-publish`.
    enabled: bool,
}

impl Topic {
    async fn log(&self) -> anyhow::Result<KafkaLog> {
        let log = KafkaLog::connect(&self.kafka, "tributary-device")?;
        log.ensure_compacted_topic(&self.name, 1)
            .await
            .with_context(|| format!("creating the registry topic {} on {}", self.name, self.kafka.brokers))?;
        Ok(log)
    }

    /// Publish the changed devices, or say clearly that ingest was not told.
    async fn publish(&self, devices: &[RegisteredDevice]) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let sent = async {
            let log = self.log().await?;
            view::publish(log.publisher().as_ref(), &self.name, devices).await?;
            anyhow::Ok(())
        };
        sent.await.with_context(|| {
            format!(
                "the registry is updated, but ingest was not told: publishing to {} on {} failed (run `tributary device publish` once Kafka is reachable)",
                self.name, self.kafka.brokers
            )
        })
    }

    /// Publish every registered device, a page at a time; returns how many.
    async fn publish_all(&self, registry: Arc<dyn DeviceRegistry>) -> anyhow::Result<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let log = self.log().await?;
        // What the relay does at its start: every device, a page at a time.
        let mut relay = Relay::new(registry, log.publisher(), &self.name, RelaySettings::default());
        relay
            .publish_all()
            .await
            .with_context(|| format!("publishing the registry to {} on {}", self.name, self.kafka.brokers))
    }
}

fn print_device(d: &RegisteredDevice) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(d)?);
    Ok(())
}

/// Devices as aligned columns, with a header.
fn table(devices: &[RegisteredDevice]) -> String {
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.group.clone(),
                d.status.as_str().to_owned(),
                d.key_version.to_string(),
                d.enrolled_by.as_str().to_owned(),
                d.last_seen
                    .map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                d.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::table::render(
        ["ID", "GROUP", "STATE", "KEY", "ENROLLED BY", "LAST SEEN", "NAME"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_key_value() {
        assert_eq!(parse_tag("site = Oslo"), Ok(("site".into(), "Oslo".into())));
        assert!(parse_tag("site").is_err());
    }

    #[test]
    fn the_table_aligns_columns() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let d = |id: &str, name: Option<&str>| RegisteredDevice {
            id: id.into(),
            name: name.map(str::to_owned),
            group: "g".into(),
            tags: BTreeMap::new(),
            status: DeviceStatus::Active,
            key_version: 2,
            enrolled_by: tributary_shared::registry::Enrollment::Operator,
            revision: 1,
            created_at: t,
            updated_at: t,
            last_seen: None,
        };
        let out = table(&[d("a", Some("Alpha")), d("long-device-id", None)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID              GROUP"), "{out}");
        assert!(
            lines[1].starts_with("a               g      active  2    operator     -"),
            "{out}"
        );
        assert!(lines[1].ends_with("Alpha"), "{out}");
        assert!(lines[2].ends_with('-'), "no trailing spaces: {out}");
    }
}
