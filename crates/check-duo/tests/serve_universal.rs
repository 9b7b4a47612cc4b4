//! Duo's Universal Prompt through `check-duo serve`, in a real Chromium: the password on the
//! portal, then duo-sim's hosted prompt (which checks the request JWT as Duo does), approve or
//! deny there, and back to the portal, which accepts the answer only with the `state` it gave
//! this browser, once, and validates the `id_token` before making a session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use duo_sim::{Behaviours, PushKind, SimConfig, UserBehaviour};
use serde_json::json;

use support::serve::{http, Serve};
use support::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

const IKEY: &str = "DIUNIVERSALPROMPTXXX";
const SKEY: &str = "universalPromptSkeyForTheSimulatorOnly12";
const CLIENT_ID: &str = "DIUPCLIENTIDXXXXXXXX";
const CLIENT_SECRET: &str = "universalPromptClientSecretForTheSimOnly";
const PASSWORD: &str = "pw-prompt";
const PAGE: Duration = Duration::from_secs(20);

fn tools(test: &str) -> bool {
    support::tools_present(
        test,
        &[("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)],
    )
}

struct World {
    _dir: tempfile::TempDir,
    sim: duo_sim::SimHandle,
    serve: Serve,
    browser: Browser,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(IKEY, SKEY);
    cfg.client_id = Some(CLIENT_ID.into());
    cfg.client_secret = Some(CLIENT_SECRET.into());
    cfg.behaviours = Behaviours::default()
        .with_user("alice", UserBehaviour::push(PushKind::Approve))
        .with_user("bob", UserBehaviour::push(PushKind::Deny));
    let sim = duo_sim::start(cfg).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let config = json!({
        "usernames": {"alice": hash, "bob": hash},
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                "prompt": "universal", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        "cache": {"path": dir.path().join("sessions.db")}
    });
    let serve = Serve::start(&dir.path().join("serve"), config, false);
    let browser = Browser::start(dir.path());
    World {
        _dir: dir,
        sim,
        serve,
        browser,
    }
}

impl World {
    /// The portal's sign-in for a target on the daemon's own host (its health page, as the
    /// protected page), the password typed in; then the browser is on its way to Duo.
    fn password(&self, user: &str) {
        let target = self.serve.url("/api/health");
        let q: String = serde_urlencoded::to_string([("rd", target.as_str())]).unwrap();
        self.browser.goto(&format!("{}?{q}", self.serve.portal()));
        let b = &self.browser;
        b.wait_for_path("/", PAGE).unwrap();
        let user_field = b.wait_for_element("#username", PAGE);
        b.send_keys(&user_field, user);
        let pw = b.find("#password").unwrap();
        b.send_keys(&pw, PASSWORD);
        let submit = b.find("button[type=submit]").unwrap();
        b.click_to_leave(&submit);
    }

    /// On duo-sim's hosted prompt, press `action` (`approve` or `deny`).
    fn at_duo(&self, action: &str) {
        let b = &self.browser;
        b.wait_for_path("/oauth/v1/authorize", PAGE).unwrap();
        let button = b.wait_for_element(&format!("form.{action} button"), PAGE);
        b.click_to_leave(&button);
    }

    fn session(&self) -> Option<String> {
        self.browser.cookie("check-duo")
    }

    fn authorized(&self, cookie: &str) -> u16 {
        let r = http(
            "GET",
            &self.serve.url("/api/authz/auth-request"),
            &[
                ("X-Original-URL", &self.serve.url("/private/")),
                ("X-Original-Method", "GET"),
                ("Cookie", &format!("check-duo={cookie}")),
            ],
            None,
        );
        r.status
    }
}

#[test]
fn password_then_the_prompt_then_the_protected_page() {
    if !tools("universal prompt approve") {
        return;
    }
    let w = world();
    w.password("alice");
    w.at_duo("approve");
    // Back through the callback to the target: the daemon's health page.
    w.browser.wait_for_path("/api/health", PAGE).unwrap();
    assert!(w.browser.page_source().contains("ok"));
    let cookie = w.session().expect("a session");
    assert_eq!(w.authorized(&cookie), 200);
    assert_eq!(
        w.sim.counters().auth,
        0,
        "no Auth API push in the Universal Prompt mode"
    );
    assert!(
        w.serve.log().contains("event=prompt_approved"),
        "{}",
        w.serve.log()
    );
}

#[test]
fn a_denial_at_duo_makes_no_session() {
    if !tools("universal prompt deny") {
        return;
    }
    let w = world();
    w.password("bob");
    w.at_duo("approve");
    w.browser.wait_for_path("/wait", PAGE).unwrap();
    let b = &w.browser;
    b.wait_for("the denial's message", PAGE, |b| {
        b.page_source().contains("Not signed in")
    });
    assert!(w.session().is_none());
    assert!(
        w.serve.log().contains("event=prompt_denied"),
        "{}",
        w.serve.log()
    );
}

/// An HTTPS client that trusts duo-sim's CA and follows no redirect: the prompt's answer, taken
/// as the browser would get it.
fn sim_agent(sim: &duo_sim::SimHandle) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut sim.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(tls))
        .redirects(0)
        .timeout(PAGE)
        .build()
}

#[test]
fn a_replayed_or_foreign_state_is_refused() {
    if !tools("universal prompt state") {
        return;
    }
    let w = world();
    w.password("alice");
    let b = &w.browser;
    b.wait_for_path("/oauth/v1/authorize", PAGE).unwrap();
    // Approve on the prompt's form, but take Duo's redirect back instead of following it.
    let page = b.page_source();
    let marker = r#"name="sid" value=""#;
    let at = page.find(marker).expect("the prompt's form") + marker.len();
    let sid = &page[at..at + page[at..].find('"').unwrap()];
    let answer = sim_agent(&w.sim)
        .post(&format!("https://{}/oauth/v1/prompt", w.sim.host()))
        .send_form(&[("sid", sid), ("action", "approve")])
        .unwrap();
    let callback = answer.header("location").unwrap().to_string();
    assert!(callback.contains("/duo-callback?"), "{callback}");
    // Another browser (no sign-in of its own) with it: refused.
    let r = http("GET", &callback, &[("Accept", "text/html")], None);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("did not start"), "{}", r.body);
    // A forged state in this browser: refused, and it takes nothing from the real one.
    let forged = callback.replace("state=", "state=x");
    b.goto(&forged);
    b.wait_for("the refusal", PAGE, |b| {
        b.page_source().contains("not for the sign-in")
    });
    // The real answer, once: the session.
    b.goto(&callback);
    b.wait_for_path("/api/health", PAGE).unwrap();
    let cookie = w.session().expect("a session");
    assert_eq!(w.authorized(&cookie), 200);
    // The same answer again: refused (the state was taken with the first use, and the sign-in
    // is over).
    b.goto(&callback);
    b.wait_for("the refusal", PAGE, |b| {
        b.page_source().contains("Not signed in")
    });
    assert!(
        w.serve.log().matches("event=prompt_approved").count() == 1,
        "{}",
        w.serve.log()
    );
}

#[test]
fn config_check_runs_the_universal_prompt_health_check() {
    if !tools("universal prompt config check") {
        return;
    }
    let w = world();
    let check = |config: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_check-duo"))
            .args(["config", "check", "-c"])
            .arg(config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let text = check(&w.serve.config);
    assert!(
        text.contains(
            "Universal Prompt health check: duo.client_id and duo.client_secret accepted"
        ),
        "{text}"
    );
    // A wrong secret: the health check says so, naming the keys, never the secret.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&w.serve.config).unwrap()).unwrap();
    let wrong = "X".repeat(40);
    cfg["duo"]["client_secret"] = json!(wrong);
    let bad = w.serve.config.with_file_name("wrong-secret.json");
    std::fs::write(&bad, cfg.to_string()).unwrap();
    let text = check(&bad);
    assert!(
        text.contains("Universal Prompt health check:")
            && text.contains("verify duo.client_id and duo.client_secret"),
        "{text}"
    );
    assert!(!text.contains(&wrong), "the secret in the output: {text}");
}
