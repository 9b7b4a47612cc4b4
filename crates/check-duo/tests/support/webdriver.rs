//! A minimal WebDriver (W3C) client over HTTP driving chromedriver and a headless Chromium: just
//! the commands the end-to-end tests use. Each [`Browser`] has its own chromedriver, port and
//! profile directory; dropping it ends the session (closing Chromium) and stops chromedriver.
//!
//! Sessions use `pageLoadStrategy: none`, so no command waits for a page load: a login blocks
//! the page load until the Duo push is answered, and the test must be free to answer it
//! meanwhile. Tests poll for what they expect with [`Browser::wait_for`] and
//! [`Browser::wait_for_path`]. Some commands (`page_source`) still wait for a navigation in
//! flight: don't call them while a push is pending.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{free_port, wait_for_port, wait_until, ChildGuard};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    session: String,
    agent: ureq::Agent,
    driver: ChildGuard,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless Chromium session.
    pub fn start(dir: &Path) -> Browser {
        Browser::start_with(dir, true)
    }

    /// [`Browser::start`] with page scripts disabled (Chromium's content setting: the pages'
    /// own scripts do not run, WebDriver's commands still do).
    pub fn start_without_javascript(dir: &Path) -> Browser {
        Browser::start_with(dir, false)
    }

    fn start_with(dir: &Path, javascript: bool) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile")
            .tempdir_in(dir)
            .expect("profile dir");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                // Chromium's own temporary files then go with the test's directory.
                .env("TMPDIR", profile.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
            let mut driver = ChildGuard::new("chromedriver", child);
            if let Err(e) = wait_for_port(port, Duration::from_secs(15), &mut driver) {
                last_err = e;
                continue;
            }
            let base = format!("http://127.0.0.1:{port}");
            let caps = json!({
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "pageLoadStrategy": "none",
                        // duo-sim's HTTPS (the Universal Prompt's hosted page) has a CA of its
                        // own; the gate itself still verifies it.
                        "acceptInsecureCerts": true,
                        "goog:chromeOptions": {
                            "binary": CHROMIUM,
                            "args": [
                                "--headless=new",
                                "--no-sandbox",
                                "--disable-gpu",
                                "--disable-dev-shm-usage",
                                "--disable-background-networking",
                                "--disable-component-update",
                                "--disable-sync",
                                "--no-first-run",
                                "--no-default-browser-check",
                                "--password-store=basic",
                                format!("--user-data-dir={}", profile.path().display()),
                            ],
                            "prefs": {
                                "profile.managed_default_content_settings.javascript":
                                    if javascript { 1 } else { 2 },
                            },
                        },
                    },
                },
            });
            let v = match post(&agent, &format!("{base}/session"), &caps) {
                Ok(v) => v,
                Err(e) => {
                    driver.stop(Duration::from_secs(5));
                    kill_chromium_using(profile.path());
                    panic!("new WebDriver session: {e}");
                }
            };
            let session = v["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no sessionId in {v}"))
                .to_string();
            return Browser {
                base,
                session,
                agent,
                driver,
                profile,
            };
        }
        panic!("chromedriver: {last_err}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        post(&self.agent, &self.url(path), body)
            .unwrap_or_else(|e| panic!("WebDriver POST {path}: {e}"))["value"]
            .take()
    }

    fn get(&self, path: &str) -> Value {
        let r = self
            .agent
            .get(&self.url(path))
            .call()
            .map_err(describe)
            .and_then(|r| r.into_string().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("WebDriver GET {path}: {e}"));
        let mut v: Value = serde_json::from_str(&r).expect("WebDriver JSON");
        v["value"].take()
    }

    /// Start navigating to `url` (returns at once: pageLoadStrategy none).
    pub fn goto(&self, url: &str) {
        self.post("/url", &json!({ "url": url }));
    }

    pub fn current_url(&self) -> String {
        self.get("/url").as_str().unwrap_or_default().to_string()
    }

    pub fn page_source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_string()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let r = post(
            &self.agent,
            &self.url("/element"),
            &json!({ "using": "css selector", "value": css }),
        );
        match r {
            Ok(mut v) => v["value"][ELEMENT_KEY].take().as_str().map(str::to_string),
            Err(_) => None,
        }
    }

    /// Wait up to `timeout` for an element matching `css`.
    pub fn wait_for_element(&self, css: &str, timeout: Duration) -> String {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self.find(css);
            found.is_some()
        });
        match (ok, found) {
            (true, Some(id)) => id,
            _ => panic!(
                "no element `{css}` after {timeout:?} at {}:\n{}",
                self.current_url(),
                self.page_source()
            ),
        }
    }

    pub fn send_keys(&self, element: &str, text: &str) {
        self.post(
            &format!("/element/{element}/value"),
            &json!({ "text": text }),
        );
    }

    pub fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), &json!({}));
    }

    /// Click something that leaves the page (a form's submit button): the page is marked first,
    /// so that [`Browser::wait_for_path`] waits for the next document, not this one, even when
    /// both have the same path.
    pub fn click_to_leave(&self, element: &str) {
        self.execute("window.__checkDuoLeaving = true;", &[]);
        self.click(element);
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.try_execute(script, args)
            .unwrap_or_else(|e| panic!("execute script: {e}"))
    }

    /// [`Browser::execute`] that reports failures instead of panicking: scripts fail while a
    /// navigation replaces the document.
    pub fn try_execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        post(
            &self.agent,
            &self.url("/execute/sync"),
            &json!({ "script": script, "args": args }),
        )
        .map(|mut v| v["value"].take())
    }

    /// Open a new tab and switch to it; returns the previous window's handle.
    pub fn open_tab(&self) -> String {
        let previous = self.get("/window").as_str().unwrap_or_default().to_string();
        let v = self.post("/window/new", &json!({ "type": "tab" }));
        let handle = v["handle"].as_str().expect("new window handle").to_string();
        self.switch_to(&handle);
        previous
    }

    /// Close the current tab and switch to `handle`.
    pub fn close_tab(&self, back_to: &str) {
        let _ = self
            .agent
            .delete(&self.url("/window"))
            .call()
            .map_err(describe);
        self.switch_to(back_to);
    }

    pub fn switch_to(&self, handle: &str) {
        self.post("/window", &json!({ "handle": handle }));
    }

    /// A cookie's value, HttpOnly ones included (WebDriver sees them, page scripts do not).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let all = self.get("/cookie");
        all.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(str::to_string)
    }

    /// Poll until `cond` holds (e.g. on the URL or the page source); panics with the page after
    /// `timeout`, naming `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Browser) -> bool) {
        if !wait_until(timeout, || cond(self)) {
            panic!(
                "timed out after {timeout:?} waiting for {what}; at {}:\n{}",
                self.current_url(),
                self.page_source()
            );
        }
    }

    /// Wait for a loaded document (readyState complete) whose URL path is `path` and that is
    /// not a page left by [`Browser::click_to_leave`]; on timeout, the error names the page the
    /// browser is on.
    pub fn wait_for_path(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let script =
            "return [location.pathname, document.readyState, window.__checkDuoLeaving === true];";
        let ok = wait_until(timeout, || match self.try_execute(script, &[]) {
            Ok(v) => v[0] == path && v[1] == "complete" && v[2] == false,
            Err(_) => false,
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "timed out after {timeout:?} waiting for page {path}; at {}:\n{}",
                self.current_url(),
                self.page_source()
            ))
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; stopping chromedriver does not (its Chromium
        // would live on, reparented to init), so whatever still runs with this profile goes too.
        let _ = self
            .agent
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        self.driver.stop(Duration::from_secs(5));
        kill_chromium_using(self.profile.path());
    }
}

/// SIGKILL every process whose command line names `profile` as its user data directory: the
/// Chromium processes of one [`Browser`] and no other.
fn kill_chromium_using(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == needle.as_bytes())
        {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<Value, String> {
    let text = agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .map_err(describe)?
        .into_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => {
            format!("HTTP {code}: {}", r.into_string().unwrap_or_default())
        }
        other => other.to_string(),
    }
}
