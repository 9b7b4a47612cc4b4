//! The real `check-duo serve` binary on free loopback ports, its config written to the test's
//! temp dir, its log in `serve.log` there. Ready once `/api/health` answers 200; stopped with
//! SIGTERM, and [`Serve::stop`] asserts that the stop was clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{free_port, wait_for_port, wait_until, ChildGuard};

/// A running daemon.
pub struct Serve {
    pub port: u16,
    /// The FastCGI authorizer's port, when asked for.
    pub fcgi_port: Option<u16>,
    pub dir: PathBuf,
    child: ChildGuard,
}

/// The portal's URL for a daemon on `port`: the daemon itself, on 127.0.0.1 like the proxies in
/// front of the apps, so that the host-only cookie goes to both (cookies ignore ports).
pub fn portal_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

impl Serve {
    /// Write `config` (a seed config; its `server` section gets `listen`, `portal_url` and,
    /// with `fastcgi`, `fastcgi_listen` set to free ports) under `dir` and start the daemon.
    pub fn start(dir: &Path, mut config: Value, fastcgi: bool) -> Serve {
        fs::create_dir_all(dir).expect("mkdir serve dir");
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let fcgi_port = fastcgi.then(free_port);
            if config.get("server").is_none() {
                config["server"] = json!({});
            }
            config["server"]["listen"] = json!(format!("127.0.0.1:{port}"));
            config["server"]["portal_url"] = json!(portal_url(port));
            if let Some(p) = fcgi_port {
                config["server"]["fastcgi_listen"] = json!(format!("127.0.0.1:{p}"));
            }
            let cfg_file = dir.join("serve.json");
            fs::write(&cfg_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            let log = dir.join("serve.log");
            let child = Command::new(env!("CARGO_BIN_EXE_check-duo"))
                .args(["serve", "-c"])
                .arg(&cfg_file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn check-duo serve");
            let mut child = ChildGuard::new("check-duo serve", child);
            let mut s = match wait_for_port(port, Duration::from_secs(20), &mut child) {
                Ok(()) => Serve {
                    port,
                    fcgi_port,
                    dir: dir.to_path_buf(),
                    child,
                },
                Err(e) => {
                    last = format!(
                        "{e}\n--- serve.log ---\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                    if last.contains("in use") {
                        continue;
                    }
                    panic!("check-duo serve: {last}");
                }
            };
            if let Some(p) = fcgi_port {
                if let Err(e) = wait_for_port(p, Duration::from_secs(10), &mut s.child) {
                    panic!("check-duo serve (FastCGI): {e}\n{}", s.log());
                }
            }
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let healthy = wait_until(Duration::from_secs(20), || {
                agent
                    .get(&s.url("/api/health"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .is_some_and(|b| b == "ok\n")
            });
            assert!(healthy, "/api/health never answered ok\n{}", s.log());
            return s;
        }
        panic!("check-duo serve: {last}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn portal(&self) -> String {
        portal_url(self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM, then assert that the daemon exited by itself, successfully, saying so.
    pub fn stop(mut self) {
        self.child.stop(Duration::from_secs(10));
        let status = self.child.exited().expect("exited after stop");
        let log = self.log();
        assert!(
            status.success(),
            "check-duo serve did not stop cleanly on SIGTERM ({status})\n{log}"
        );
        assert!(log.contains("serve: stopping"), "{log}");
    }
}

/// One HTTP reply, whatever its status (redirects are not followed).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `method url` with these headers (and a form body), redirects not followed.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> Reply {
    use std::io::Read as _;
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match form {
        Some(f) => req.send_form(f),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut hs = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            hs.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    let mut body = String::new();
    let _ = resp.into_reader().take(1 << 20).read_to_string(&mut body);
    Reply {
        status,
        headers: hs,
        body,
    }
}

/// A browser without a browser: a cookie jar for 127.0.0.1 (cookies ignore ports) and the
/// portal's sign-in over plain HTTP, with the CSRF token taken from the form.
#[derive(Default)]
pub struct Jar {
    pub cookies: std::collections::BTreeMap<String, String>,
}

impl Jar {
    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn take(&mut self, r: &Reply) {
        for c in r.set_cookies() {
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k.trim());
            } else {
                self.cookies
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    /// GET with the jar's cookies, as a browser navigating (Accept: text/html).
    pub fn get(&mut self, url: &str) -> Reply {
        let c = self.header();
        let r = http("GET", url, &[("Cookie", &c), ("Accept", "text/html")], None);
        self.take(&r);
        r
    }

    pub fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let c = self.header();
        let r = http(
            "POST",
            url,
            &[("Cookie", &c), ("Accept", "text/html")],
            Some(form),
        );
        self.take(&r);
        r
    }

    /// The value of the session cookie, if set.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("check-duo").map(String::as_str)
    }
}

/// The value of `name="…"`'s `value` in a form.
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?;
    Some(
        v.split('"')
            .next()?
            .replace("&amp;", "&")
            .replace("&quot;", "\""),
    )
}

/// Sign in on the portal at `portal` (its `?rd=…` URL, as a proxy's redirect gave it), approving
/// the push with `approve(txid)`; returns the jar holding the session cookie.
pub fn sign_in_over_http(
    sign_in_url: &str,
    user: &str,
    password: &str,
    sim: &duo_sim::SimHandle,
) -> Jar {
    let mut jar = Jar::default();
    let form = jar.get(sign_in_url);
    assert_eq!(form.status, 200, "the sign-in form: {}", form.body);
    let csrf = form_value(&form.body, "csrf").expect("a csrf field");
    let rd = form_value(&form.body, "rd").unwrap_or_default();
    let base = sign_in_url.split('?').next().unwrap();
    let r = jar.post(
        base,
        &[
            ("csrf", &csrf),
            ("rd", &rd),
            ("username", user),
            ("password", password),
            ("factor", "push"),
        ],
    );
    assert_eq!(r.status, 303, "the sign-in POST: {}", r.body);
    let wait = format!("{}wait", base);
    let push = sim
        .wait_for_pending(Duration::from_secs(20))
        .expect("a push was sent");
    assert!(sim.approve(&push.txid));
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let r = jar.get(&wait);
        last = r.body;
        jar.session().is_some()
    });
    assert!(ok, "no session cookie after the approval: {last}");
    jar
}
