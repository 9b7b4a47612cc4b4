//! The `duo-sim` command: parse options, start the simulator, print one JSON line with the
//! addresses, then serve until killed (SIGINT/SIGTERM end the process; nothing needs flushing).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use duo_sim::{Behaviours, SimConfig};

/// A Duo Auth API v2 simulator for tests (HTTPS on loopback, plus a control API and phone page).
#[derive(Parser, Debug)]
#[command(name = "duo-sim", version)]
struct Cli {
    /// Duo API listen address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Control API and phone page listen address (plain HTTP, loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    control_listen: SocketAddr,
    /// Integration key clients must present.
    #[arg(long, requires = "skey", conflicts_with = "keys_file")]
    ikey: Option<String>,
    /// Secret key (visible in `ps`: prefer --keys-file outside throwaway setups).
    #[arg(long, requires = "ikey", conflicts_with = "keys_file")]
    skey: Option<String>,
    /// JSON file `{"ikey": "...", "skey": "..."}`.
    #[arg(long, required_unless_present = "ikey")]
    keys_file: Option<PathBuf>,
    /// Per-user behaviours (JSON; see users.example.json).
    #[arg(long)]
    users: Option<PathBuf>,
    /// PEM certificate chain to serve (with --key); default: a generated CA and leaf.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Write the PEM clients must trust to this file.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Largest accepted distance between a request's Date and the clock, seconds.
    #[arg(long, default_value_t = 300)]
    date_window: u64,
    /// auth_status long-poll interval, seconds (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    long_poll: f64,
    /// How long an unanswered push waits before timing out, seconds (fractions allowed).
    #[arg(long, default_value_t = 60.0)]
    push_timeout: f64,
    /// "Require Verified Duo Push" for every user: clients sending
    /// client_supports_verified_push=1 get a preauth txid, and their pushes a 3-digit code.
    #[arg(long)]
    verified_push: bool,
    /// Universal Prompt client id (20 characters): serves /oauth/v1/ (with --client-secret).
    #[arg(long, requires = "client_secret")]
    client_id: Option<String>,
    /// Universal Prompt client secret (40 characters; visible in `ps`: prefer --keys-file).
    #[arg(long, requires = "client_id")]
    client_secret: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    ikey: String,
    skey: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name}: {v} is not a duration"))
}

fn run(cli: Cli) -> Result<(), String> {
    let (mut client_id, mut client_secret) = (cli.client_id, cli.client_secret);
    let (ikey, skey) = match (&cli.keys_file, cli.ikey, cli.skey) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let k: KeysFile =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            client_id = client_id.or(k.client_id);
            client_secret = client_secret.or(k.client_secret);
            (k.ikey, k.skey)
        }
        (None, Some(i), Some(s)) => (i, s),
        _ => return Err("give --ikey and --skey, or --keys-file".into()),
    };
    let behaviours = match &cli.users {
        Some(path) => Behaviours::load(path)?,
        None => Behaviours::default(),
    };
    let mut cfg = SimConfig::new(ikey, skey);
    cfg.listen = cli.listen;
    cfg.control_listen = cli.control_listen;
    cfg.behaviours = behaviours;
    cfg.date_window = Duration::from_secs(cli.date_window);
    cfg.long_poll = seconds("long-poll", cli.long_poll)?;
    cfg.push_timeout = seconds("push-timeout", cli.push_timeout)?;
    cfg.cert = cli.cert.zip(cli.key);
    cfg.log = true;
    cfg.verified_push = cli.verified_push;
    cfg.client_id = client_id;
    cfg.client_secret = client_secret;

    let sim = duo_sim::start(cfg).map_err(|e| format!("cannot start: {e}"))?;
    if let Some(path) = &cli.ca_out {
        std::fs::write(path, sim.ca_pem())
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    let line = serde_json::json!({
        "api": sim.api_addr().to_string(),
        "control": sim.control_addr().to_string(),
        "ca_file": cli.ca_out.as_ref().map(|p| p.display().to_string()),
    });
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    eprintln!(
        "duo-sim: API https://{} , phone page http://{}/",
        sim.api_addr(),
        sim.control_addr()
    );
    // The listeners run on their own threads; this one only keeps the process alive.
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duo-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
