//! Redis with Sentinel, for real: a master, its replica and sentinels watching them
//! (`redis-server` and `redis-sentinel` processes), each on a free loopback port with its files
//! in the test's temp dir, all stopped when dropped. Their logs are printed when a test fails.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{free_port, wait_for_port, wait_until, ChildGuard};
use super::redis::REDIS_SERVER;

pub const REDIS_SENTINEL: &str = "/usr/bin/redis-sentinel";

/// The ACL user the data nodes have (the default user is off): replication, the sentinels and
/// check-duo all log in as it.
pub const USER: &str = "check-duo";
pub const PASSWORD: &str = "sentinel-test-password";

/// One server process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    guard: ChildGuard,
}

impl Node {
    /// SIGKILL, as a crash: no shutdown, no goodbye to the replica or the sentinels.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.guard.id().to_string()])
            .status();
        assert!(
            wait_until(Duration::from_secs(5), || self.guard.exited().is_some()),
            "{} did not die on SIGKILL",
            self.name
        );
    }

    /// A connection to this node: as [`USER`] for a data node, anonymous for a sentinel.
    pub fn connect(&self, auth: bool) -> redis::RedisResult<redis::Connection> {
        let url = if auth {
            format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        };
        let conn = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }
}

/// A master, a replica and `n` sentinels monitoring the master as [`Sentinels::NAME`], with a
/// quorum of a majority of them.
pub struct Sentinels {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
}

impl Sentinels {
    pub const NAME: &'static str = "check-duo-test";

    /// Start everything and wait until it is ready for a failover: the replica in sync, and
    /// every sentinel seeing the replica and the other sentinels.
    pub fn start(dir: &Path, n: usize) -> Sentinels {
        Sentinels::start_with(dir, n, &[])
    }

    /// As [`Sentinels::start`], with more ACL rules for [`USER`] on the first master (e.g.
    /// `-client|kill`: the sentinels then cannot make it a replica, nor promote it).
    pub fn start_with(dir: &Path, n: usize, master_acl: &[&str]) -> Sentinels {
        let acl = |rules: &[&str], extra: Vec<String>| {
            let mut args: Vec<String> = ["--user", "default", "off", "--user", USER, "on"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend([
                format!(">{PASSWORD}"),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ]);
            args.extend(rules.iter().map(|r| r.to_string()));
            // On both nodes: the master may be a replica after a failover.
            args.extend(["--masteruser".into(), USER.into(), "--masterauth".into()]);
            args.push(PASSWORD.into());
            // A replica syncs at once, not after the default 5 s for more replicas to join.
            args.extend(["--repl-diskless-sync-delay".into(), "0".into()]);
            args.extend(extra);
            args
        };
        let master = start_node(dir, "master", REDIS_SERVER, |_, port| {
            acl(master_acl, vec!["--port".into(), port.to_string()])
        });
        let mport = master.port;
        let quorum = n / 2 + 1;
        let replica = start_node(dir, "replica", REDIS_SERVER, |_, port| {
            acl(
                &[],
                vec![
                    "--port".into(),
                    port.to_string(),
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    mport.to_string(),
                ],
            )
        });
        let sentinels = (0..n)
            .map(|i| {
                let name = format!("sentinel-{i}");
                start_node(dir, &name, REDIS_SENTINEL, |ndir, port| {
                    let conf = ndir.join("sentinel.conf");
                    let name = Self::NAME;
                    fs::write(
                        &conf,
                        format!(
                            "sentinel monitor {name} 127.0.0.1 {mport} {quorum}\n\
                             sentinel down-after-milliseconds {name} 1000\n\
                             sentinel failover-timeout {name} 5000\n\
                             sentinel parallel-syncs {name} 1\n\
                             sentinel auth-user {name} {USER}\n\
                             sentinel auth-pass {name} {PASSWORD}\n"
                        ),
                    )
                    .expect("write sentinel.conf");
                    // The config file comes first; the rest are options as for redis-server.
                    vec![
                        conf.display().to_string(),
                        "--port".into(),
                        port.to_string(),
                    ]
                })
            })
            .collect();
        let s = Sentinels {
            master,
            replica,
            sentinels,
        };
        s.wait_ready(n);
        s
    }

    fn wait_ready(&self, n: usize) {
        let in_sync = wait_until(Duration::from_secs(20), || {
            self.replica
                .connect(true)
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        assert!(in_sync, "the replica never synced with the master");
        for s in &self.sentinels {
            let mut seen = HashMap::new();
            // Sentinels find each other through hello messages every 2 s.
            let ready = wait_until(Duration::from_secs(30), || {
                seen = self.sentinel_master(s).unwrap_or_default();
                seen.get("num-slaves").map(String::as_str) == Some("1")
                    && seen.get("num-other-sentinels") == Some(&(n - 1).to_string())
                    && seen.get("flags").map(String::as_str) == Some("master")
            });
            assert!(ready, "{} never saw the whole set up: {seen:?}", s.name);
            // And has heard from the replica itself (else it has no replica to promote).
            let mut replicas = Vec::new();
            let ready = wait_until(Duration::from_secs(30), || {
                replicas = self.sentinel_replicas(s).unwrap_or_default();
                replicas.len() == 1
                    && replicas[0].get("flags").map(String::as_str) == Some("slave")
                    && replicas[0].get("master-link-status").map(String::as_str) == Some("ok")
                    && replicas[0]
                        .get("info-refresh")
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .is_some_and(|ms| ms < 10_000)
            });
            assert!(
                ready,
                "{} never heard from the replica: {replicas:?}",
                s.name
            );
        }
    }

    /// `SENTINEL REPLICAS NAME` as one sentinel sees it.
    pub fn sentinel_replicas(&self, s: &Node) -> redis::RedisResult<Vec<HashMap<String, String>>> {
        let mut c = s.connect(false)?;
        redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(Self::NAME)
            .query(&mut c)
    }

    /// `SENTINEL FAILOVER NAME` on the first sentinel: the replica is promoted at once, and the
    /// master (alive) becomes its replica. When every sentinel names the new master, `then` runs;
    /// returns when the former master says it is a replica.
    pub fn switch_over(&self, then: impl FnOnce()) {
        let mut c = self.sentinels[0].connect(false).unwrap();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(Self::NAME)
            .query(&mut c)
            .unwrap();
        let new_master = self.replica.port.to_string();
        for s in &self.sentinels {
            let mut seen = HashMap::new();
            let switched = wait_until(Duration::from_secs(30), || {
                seen = self.sentinel_master(s).unwrap_or_default();
                seen.get("port") == Some(&new_master)
            });
            assert!(switched, "{} still names another master: {seen:?}", s.name);
        }
        then();
        let demoted = wait_until(Duration::from_secs(30), || {
            role(&self.master).is_ok_and(|r| r == "slave")
                && role(&self.replica).is_ok_and(|r| r == "master")
        });
        assert!(demoted, "the former master never became a replica");
    }

    /// `SENTINEL MASTER NAME` as one sentinel sees it.
    pub fn sentinel_master(&self, s: &Node) -> redis::RedisResult<HashMap<String, String>> {
        let mut c = s.connect(false)?;
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(Self::NAME)
            .query(&mut c)
    }

    /// The sentinels' `"host:port"` list, for the config.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The keys matching `pattern` on `node`.
    pub fn keys(node: &Node, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let mut c = node.connect(true)?;
        let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c)?;
        keys.sort();
        Ok(keys)
    }
}

/// A data node's role: "master" or "slave".
pub fn role(node: &Node) -> redis::RedisResult<String> {
    let mut c = node.connect(true)?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        // The guards stop the processes; when the test failed, show what they logged.
        if std::thread::panicking() {
            for node in [&self.master, &self.replica]
                .into_iter()
                .chain(self.sentinels.iter())
            {
                let log = fs::read_to_string(&node.log).unwrap_or_default();
                eprintln!("---- {} (port {}) ----\n{log}", node.name, node.port);
            }
        }
    }
}

/// TLS only: a master without replica or ACL, and one sentinel (quorum 1) that reaches it over
/// TLS, both with a certificate for 127.0.0.1 from a throwaway CA. Returns them and the CA's PEM
/// file (for `cache.ca_file`).
pub fn start_tls(dir: &Path) -> (Node, Node, PathBuf) {
    let certs = duo_sim::test_certificates().expect("test certificates");
    let (cert, key, ca) = (
        dir.join("tls-cert.pem"),
        dir.join("tls-key.pem"),
        dir.join("tls-ca.pem"),
    );
    fs::write(&cert, &certs.chain_pem).expect("write the certificate");
    fs::write(&key, &certs.key_pem).expect("write the key");
    fs::write(&ca, &certs.ca_pem).expect("write the CA");
    let tls = |port: u16| -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-ca-cert-file",
            &ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let master = start_node(dir, "master-tls", REDIS_SERVER, |_, port| tls(port));
    let mport = master.port;
    let sentinel = start_node(dir, "sentinel-tls", REDIS_SENTINEL, |ndir, port| {
        let conf = ndir.join("sentinel.conf");
        fs::write(
            &conf,
            format!("sentinel monitor {} 127.0.0.1 {mport} 1\n", Sentinels::NAME),
        )
        .expect("write sentinel.conf");
        let mut args = vec![conf.display().to_string()];
        args.extend(tls(port));
        args
    });
    (master, sentinel, ca)
}

/// Start `program` with the arguments `args(dir, port)` gives (which listen on `port`), loopback
/// and no persistence, in `dir/name`, on a free port (another one if it was taken meanwhile).
fn start_node(
    dir: &Path,
    name: &str,
    program: &str,
    args: impl Fn(&Path, u16) -> Vec<String>,
) -> Node {
    let ndir = dir.join(name);
    fs::create_dir_all(&ndir).expect("mkdir");
    let log = ndir.join("log");
    let mut last_err = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let child = Command::new(program)
            .args(args(&ndir, port))
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "notice"])
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&ndir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let mut guard = ChildGuard::new(name, child);
        match wait_for_port(port, Duration::from_secs(10), &mut guard) {
            Ok(()) => {
                return Node {
                    name: name.to_string(),
                    port,
                    log,
                    guard,
                }
            }
            Err(e) => last_err = e,
        }
    }
    panic!("{name}: {last_err}");
}
