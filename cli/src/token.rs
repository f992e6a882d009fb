//! `tributary token <device>`: mint a signed, expiring device token.

use tributary_shared::auth::{FleetKey, now_unix};

/// Arguments of `tributary token`.
#[derive(clap::Args)]
pub struct Args {
    /// The device the token is for.
    device: String,
    /// Fleet key (the same secret ingest is configured with).
    #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, hide_default_value = true, default_value = tributary_ingest::config::DEV_FLEET_KEY)]
    fleet_key: String,
    /// The device's key version (`tributary device show` tells it; 0 until its key is first rotated).
    #[arg(long, default_value_t = 0)]
    key_version: u32,
    /// Lifetime in seconds (ingest refuses tokens longer than its maximum, 7 days by default).
    #[arg(long, default_value_t = 86_400)]
    ttl_secs: u64,
    /// Also print the device key, for provisioning a device that mints its own tokens.
    #[arg(long)]
    show_key: bool,
    /// Print the full Authorization header value.
    #[arg(long)]
    header: bool,
}

/// Print the token.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        tributary_shared::model::valid_id(&a.device),
        "device id must be 1-128 characters of A-Z a-z 0-9 . _ : -"
    );
    let key = FleetKey::new(&a.fleet_key).device_key_at(&a.device, a.key_version);
    let token = key.token(&a.device, now_unix() + a.ttl_secs);
    if a.header {
        println!("SharedAccessSignature {token}");
    } else {
        println!("{token}");
    }
    if a.show_key {
        eprintln!("device key (base64): {}", key.to_base64());
    }
    Ok(())
}
