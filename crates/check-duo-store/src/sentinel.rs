//! Redis behind Sentinel: which master to talk to, asked of the sentinels through the `redis`
//! crate's own Sentinel client, and the master's connection, replaced when it fails.
//!
//! The crate's blocking Sentinel client has no deadline of its own (it connects to the sentinels
//! and checks the master's `ROLE` without timeouts), so each lookup runs on a thread of its own
//! and the caller waits for it until the deadline: a sentinel that hangs costs the deadline,
//! never more. The sentinels are asked in the configured order; the first one that names a
//! master (that `ROLE` confirms) is enough. The next one is asked as soon as one fails, or
//! alongside it when it has not answered within [`HEDGE`].

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use check_duo_core::Secret;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::StoreError;

/// How long one sentinel may take before the next one is asked as well.
const HEDGE: Duration = Duration::from_millis(250);

/// Where a Sentinel-managed Redis is, as the config names it. `Debug` redacts the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelSpec {
    /// The sentinels, `(host, port)`: a name, an IPv4 address or an IPv6 address without brackets.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under (`sentinel monitor NAME …`).
    pub master_name: String,
    /// ACL user for the master (not for the sentinels).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: i64,
    /// TLS to the sentinels and to the master, with the CA of `cache.ca_file` or the compiled-in
    /// roots.
    pub tls: bool,
}

/// `host:port`, `[v6]:port`; the host is returned without brackets.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, p) = r.split_once("]:")?;
        if !h.contains(':') {
            return None;
        }
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return None;
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    Some((host.to_string(), port))
}

/// How a command that failed on a dropped master connection may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Running it twice is harmless, or errs on the strict side (a count one too high, a lock
    /// seen as taken).
    Always,
    /// Only when the server refused it (READONLY, MASTERDOWN, LOADING): taking back a count twice
    /// would loosen a limit.
    IfRefused,
}

/// The master's connection, behind a mutex, and how to find the master again: by asking the
/// sentinels, or (one server) by connecting to it again. A long-running process keeps working
/// across a restart of Redis.
pub(crate) struct Master {
    inner: Arc<Inner>,
    conn: Mutex<Option<redis::Connection>>,
}

/// Where the master is.
enum Source {
    Sentinels(SentinelSpec),
    /// One server (`redis://`, `rediss://`).
    Server(redis::Client),
}

struct Inner {
    source: Source,
    ca_pem: Option<Vec<u8>>,
    /// The deadline of each store call, and the read/write timeout of the master's connection.
    timeout: Duration,
}

impl Master {
    /// Ask the sentinels for the master and connect to it, within `timeout`.
    pub(crate) fn open(
        spec: SentinelSpec,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Master, StoreError> {
        if spec.sentinels.is_empty() {
            return Err(StoreError::new(
                "redis",
                "sentinel",
                "no sentinel configured",
            ));
        }
        Master::start(Source::Sentinels(spec), ca_pem, timeout)
    }

    /// Connect to one server within `timeout`; connected again whenever the connection fails.
    pub(crate) fn server(client: redis::Client, timeout: Duration) -> Result<Master, StoreError> {
        Master::start(Source::Server(client), None, timeout)
    }

    fn start(
        source: Source,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Master, StoreError> {
        let inner = Arc::new(Inner {
            source,
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            timeout,
        });
        let conn = connect(&inner, Instant::now() + timeout)?;
        Ok(Master {
            inner,
            conn: Mutex::new(Some(conn)),
        })
    }

    /// Another connection to the same master (or server), made now.
    pub(crate) fn another(&self) -> Result<Master, StoreError> {
        let conn = connect(&self.inner, Instant::now() + self.inner.timeout)?;
        Ok(Master {
            inner: Arc::clone(&self.inner),
            conn: Mutex::new(Some(conn)),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<redis::Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one command (or pipeline) on the master, within the deadline `timeout` from now.
    /// A connection that fails, times out or answers READONLY is dropped; when `retry` allows
    /// and time is left, the sentinels are asked again and the command runs once more on the
    /// master they name. Whatever still fails is the `StoreError` (the core denies).
    pub(crate) fn run<T>(
        &self,
        what: &'static str,
        retry: Retry,
        mut f: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let mut slot = self.slot();
        let first = match slot.as_mut() {
            Some(conn) => f(conn),
            // Dropped by an earlier call: this call's first attempt is on a new connection.
            None => {
                let mut conn = connect(&self.inner, deadline)?;
                let (r, usable) = within(&mut conn, deadline, self.inner.timeout, &mut f);
                if usable {
                    *slot = Some(conn);
                }
                r
            }
        };
        let e = match first {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !drops_connection(&e) {
            return Err(StoreError::new("redis", what, e));
        }
        *slot = None;
        let may_retry = match retry {
            Retry::Always => true,
            Retry::IfRefused => refused(&e),
        };
        if !may_retry || Instant::now() >= deadline {
            return Err(StoreError::new("redis", what, e));
        }
        let again = match self.inner.source {
            Source::Sentinels(_) => "asking the sentinels again",
            Source::Server(_) => "connecting again",
        };
        let mut conn = connect(&self.inner, deadline)
            .map_err(|e2| StoreError::new("redis", what, format!("{e}; {again}: {}", e2.detail)))?;
        let (r, usable) = within(&mut conn, deadline, self.inner.timeout, &mut f);
        match r {
            Ok(v) => {
                if usable {
                    *slot = Some(conn);
                }
                Ok(v)
            }
            Err(e2) => {
                if usable && !drops_connection(&e2) {
                    *slot = Some(conn);
                }
                let then = match self.inner.source {
                    Source::Sentinels(_) => "then on the master the sentinels name",
                    Source::Server(_) => "then on a new connection",
                };
                Err(StoreError::new("redis", what, format!("{e}; {then}: {e2}")))
            }
        }
    }
}

/// Run `f` on a connection made in this call, with its timeouts cut to what is left before
/// `deadline`, then set back to `timeout` for later calls. The flag says whether they were set
/// back (else the connection is not kept).
fn within<T>(
    conn: &mut redis::Connection,
    deadline: Instant,
    timeout: Duration,
    f: &mut impl FnMut(&mut redis::Connection) -> RedisResult<T>,
) -> (RedisResult<T>, bool) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return (Err(timed_out()), false);
    }
    let set = |c: &redis::Connection, t: Duration| {
        c.set_read_timeout(Some(t))
            .and_then(|()| c.set_write_timeout(Some(t)))
    };
    if let Err(e) = set(conn, left) {
        return (Err(e), false);
    }
    let r = f(conn);
    let usable = set(conn, timeout).is_ok();
    (r, usable)
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "deadline passed",
    ))
}

/// A server error answered in full leaves the connection usable; anything else (I/O, a timeout,
/// a reply that did not parse, a server that is no longer the master) drops it.
fn drops_connection(e: &RedisError) -> bool {
    if refused(e) {
        return true;
    }
    !matches!(
        e.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    )
}

/// The server did not run the command because it is not (or not yet) a usable master. A write
/// inside a script or a transaction comes back as a script error or EXECABORT naming READONLY.
fn refused(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading
        )
    ) || e.to_string().contains("READONLY")
}

/// Find the master and connect to it before `deadline`: one sentinel after the other, the next
/// one as soon as one fails or after [`HEDGE`] without an answer, the first master found wins.
fn connect(inner: &Arc<Inner>, deadline: Instant) -> Result<redis::Connection, StoreError> {
    let spec = match &inner.source {
        Source::Sentinels(spec) => spec,
        Source::Server(client) => {
            return connect_server(client, inner.timeout, deadline)
                .map_err(|e| StoreError::new("redis", "connect", e));
        }
    };
    let n = spec.sentinels.len();
    let (tx, rx) = mpsc::channel::<(usize, RedisResult<redis::Connection>)>();
    let (mut started, mut answered) = (0, 0);
    let mut errors: Vec<String> = Vec::new();
    loop {
        if started < n {
            let (shared, tx, i) = (Arc::clone(inner), tx.clone(), started);
            let spawned = thread::Builder::new()
                .name("check-duo-sentinel".into())
                .spawn(move || {
                    // The receiver may be gone (another sentinel answered, or the deadline
                    // passed): the connection is then dropped here.
                    let _ = tx.send((i, lookup(&shared, i, deadline)));
                });
            if let Err(e) = spawned {
                answered += 1;
                errors.push(format!(
                    "{}: cannot start a thread: {e}",
                    sentinel_name(spec, i)
                ));
            }
            started += 1;
            if answered == n {
                break;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let until = if started < n {
            deadline.min(now + HEDGE)
        } else {
            deadline
        };
        match rx.recv_timeout(until - now) {
            Ok((_, Ok(conn))) => return Ok(conn),
            Ok((i, Err(e))) => {
                answered += 1;
                // The crate does not say whether the sentinel or the master it named failed
                // to connect.
                let whose = if e.is_io_error() {
                    " or the master it names"
                } else {
                    ""
                };
                errors.push(format!("{}{whose}: {e}", sentinel_name(spec, i)));
                if answered == n {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if answered < n {
        errors.push(format!(
            "no answer within {:?} from {}",
            inner.timeout,
            if answered == 0 {
                "any sentinel"
            } else {
                "the others"
            }
        ));
    }
    Err(StoreError::new(
        "redis",
        "sentinel",
        format!(
            "no master {:?} found: {}",
            spec.master_name,
            errors.join("; ")
        ),
    ))
}

/// One server, within what is left before `deadline`; the connection's timeouts are `timeout`.
fn connect_server(
    client: &redis::Client,
    timeout: Duration,
    deadline: Instant,
) -> RedisResult<redis::Connection> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    let conn = client.get_connection_with_timeout(left)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

fn sentinel_name(spec: &SentinelSpec, i: usize) -> String {
    match spec.sentinels.get(i) {
        Some((h, p)) if h.contains(':') => format!("sentinel [{h}]:{p}"),
        Some((h, p)) => format!("sentinel {h}:{p}"),
        None => format!("sentinel {i}"),
    }
}

/// Ask sentinel `i` for the master (the crate checks its `ROLE`), then connect to it with what
/// is left before `deadline`; the connection's timeouts are `timeout`.
fn lookup(inner: &Inner, i: usize, deadline: Instant) -> RedisResult<redis::Connection> {
    let Source::Sentinels(spec) = &inner.source else {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "not behind Sentinel",
        )));
    };
    let (host, port) =
        spec.sentinels.get(i).cloned().ok_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no such sentinel"))
        })?;
    let addr = if spec.tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let mut b = SentinelClientBuilder::new([addr], &spec.master_name, SentinelServerType::Master)?
        .set_client_to_redis_db(spec.db);
    if let Some(u) = &spec.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &spec.password {
        b = b.set_client_to_redis_password(p.expose());
    }
    if spec.tls {
        b = b
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(pem) = &inner.ca_pem {
            let certs = || redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            b = b
                .set_client_to_redis_certificates(certs())
                .set_client_to_sentinel_certificates(certs());
        }
    }
    let client = b.build()?.get_client()?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    let conn = client.get_connection_with_timeout(left)?;
    conn.set_read_timeout(Some(inner.timeout))?;
    conn.set_write_timeout(Some(inner.timeout))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SentinelSpec {
        SentinelSpec {
            sentinels: vec![
                ("10.0.0.1".into(), 26379),
                ("sentinel-b.internal".into(), 26380),
                ("::1".into(), 26381),
            ],
            master_name: "my master/#1".into(),
            username: Some("check-duo".into()),
            password: Some(Secret::new("p@ss:w/rd#?%")),
            db: 3,
            tls: true,
        }
    }

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("a.b:1"), Some(("a.b".into(), 1)));
        assert_eq!(
            parse_host_port("[fe80::1]:26379"),
            Some(("fe80::1".into(), 26379))
        );
        for bad in [
            "a", "a:", ":1", "a:0", "a:65536", "a:+1", "::1:5", "[a]:1", "a/b:1", "u@h:1", "a,b:1",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let d = format!("{:?}", spec());
        assert!(!d.contains("p@ss"), "{d}");
    }

    #[test]
    fn which_errors_drop_the_connection() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(drops_connection(&io));
        assert!(!refused(&io));
        assert!(drops_connection(&timed_out()));
        let ro = redis::make_extension_error("READONLY".into(), Some("replica".into()));
        assert!(refused(&ro) && drops_connection(&ro));
        let wrongtype = redis::make_extension_error("WRONGTYPE".into(), None);
        assert!(!drops_connection(&wrongtype));
    }
}
