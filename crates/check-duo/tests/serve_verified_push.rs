//! Verified Duo Push through `check-duo serve`: the portal asks Duo for it, shows the code Duo
//! gives on the waiting page (with and without JavaScript: the page itself carries it), and
//! the push is approved only with that code typed on the phone (duo-sim's, as Duo Mobile does).
//! The pipe mode, which has no page to show a code on, never asks for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use duo_sim::{Behaviours, PushKind, UserBehaviour};
use serde_json::json;

use support::process::wait_until;
use support::serve::{form_value, Jar, Serve};
use support::world::start_sim;

const IKEY: &str = "DIVERIFIEDPUSHXXXXXX";
const SKEY: &str = "verifiedPushSecretKeyForTheSimulatorOnly";
const PASSWORD: &str = "pw-verified";
const APP: &str = "127.0.0.1:8080";

fn start(dir: &std::path::Path, verified: bool) -> (duo_sim::SimHandle, Serve) {
    let vera = UserBehaviour {
        verified_push: true,
        ..UserBehaviour::push(PushKind::Manual)
    };
    let (sim, ca) = start_sim(
        IKEY,
        SKEY,
        Behaviours::default().with_user("vera", vera),
        dir,
    );
    let cfg = json!({
        "username": "vera", "password": PASSWORD,
        "duo": {"ikey": IKEY, "skey": SKEY, "host": sim.host(), "ca_file": ca,
                "push_timeout": 20, "verified_push": verified},
        "cache": {"path": dir.join("sessions.db")},
        "limits": {"push_cooldown": 0}
    });
    let s = Serve::start(&dir.join("serve"), cfg, false);
    (sim, s)
}

/// Sign in up to the waiting page; the jar and the waiting page once the code is on it.
fn until_the_code(s: &Serve) -> (Jar, String) {
    let sign_in_url = s.sign_in_url(&format!("http://{APP}/private/"));
    let mut jar = Jar::default();
    let form = jar.get(&sign_in_url);
    let csrf = form_value(&form.body, "csrf").unwrap();
    let rd = form_value(&form.body, "rd").unwrap();
    let r = jar.post(
        &s.portal(),
        &[
            ("csrf", &csrf),
            ("rd", &rd),
            ("username", "vera"),
            ("password", PASSWORD),
            ("factor", "push"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let mut page = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            page = jar.get(&s.url("/wait")).body;
            page.contains("verification-code")
        }),
        "no code on the waiting page: {page}"
    );
    (jar, page)
}

fn code_on(page: &str) -> String {
    let at = page.find(r#"id="verification-code""#).unwrap();
    let rest = &page[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</p>").unwrap();
    rest[start..end].to_string()
}

fn settled(jar: &mut Jar, s: &Serve) -> String {
    let mut page = String::new();
    assert!(wait_until(Duration::from_secs(10), || {
        page = jar.get(&s.url("/wait")).body;
        !page.contains("Check your phone")
    }));
    page
}

#[test]
fn the_waiting_page_shows_the_code_and_only_that_code_approves() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, s) = start(dir.path(), true);

    // The right code: signed in.
    let (mut jar, page) = until_the_code(&s);
    let code = code_on(&page);
    let push = sim.pushes().into_iter().last().unwrap();
    assert_eq!(
        push.verification_code.as_deref(),
        Some(code.as_str()),
        "the code Duo gave"
    );
    assert!(page.contains("Enter this code in Duo Mobile"), "{page}");
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\""),
        "works without JavaScript"
    );
    assert_eq!(
        sim.approve_with_code(&push.txid, &code),
        Some(duo_sim::PushState::Allow)
    );
    let done = settled(&mut jar, &s);
    assert!(done.contains("You are signed in"), "{done}");
    assert!(jar.session().is_some());

    // A wrong code: the phone denies, and the page says so.
    let (mut jar, page) = until_the_code(&s);
    let code = code_on(&page);
    let wrong = if code == "000" { "111" } else { "000" };
    let push = sim.pushes().into_iter().last().unwrap();
    sim.approve_with_code(&push.txid, wrong);
    let done = settled(&mut jar, &s);
    assert!(
        done.contains("The push was denied on your phone."),
        "{done}"
    );
    assert!(jar.session().is_none());
    s.stop();
}

#[test]
fn without_verified_push_no_code_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, s) = start(dir.path(), false);
    let sign_in_url = s.sign_in_url(&format!("http://{APP}/private/"));
    let mut jar = Jar::default();
    let form = jar.get(&sign_in_url);
    let csrf = form_value(&form.body, "csrf").unwrap();
    jar.post(
        &s.portal(),
        &[
            ("csrf", &csrf),
            ("username", "vera"),
            ("password", PASSWORD),
        ],
    );
    let push = sim
        .wait_for_pending(Duration::from_secs(10))
        .expect("a push");
    assert_eq!(push.verification_code, None, "a plain push");
    assert!(!jar.get(&s.url("/wait")).body.contains("verification-code"));
    s.stop();
}

/// In Chromium, as a user: the password on the portal, the code read off the waiting page,
/// typed on duo-sim's phone page (its code box, as in Duo Mobile), approved; with a wrong code,
/// the denial's message. Once with JavaScript (the page reloads itself when the code arrives)
/// and once without (the `<noscript>` refresh; the phone page, a script itself, is then
/// answered through duo-sim's API with the code read off the portal's page).
#[test]
fn in_a_browser_the_code_on_the_page_is_typed_on_the_phone() {
    use support::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};
    if !support::tools_present(
        "verified push in a browser",
        &[("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sim, s) = start(dir.path(), true);
    let page = Duration::from_secs(20);
    for javascript in [true, false] {
        for right in [true, false] {
            let b = if javascript {
                Browser::start(dir.path())
            } else {
                Browser::start_without_javascript(dir.path())
            };
            let target = s.url("/api/health");
            let q = serde_urlencoded::to_string([("rd", target.as_str())]).unwrap();
            b.goto(&format!("{}?{q}", s.portal()));
            b.wait_for_path("/", page).unwrap();
            let user = b.wait_for_element("#username", page);
            b.send_keys(&user, "vera");
            let pw = b.find("#password").unwrap();
            b.send_keys(&pw, PASSWORD);
            let submit = b.find("button[type=submit]").unwrap();
            b.click_to_leave(&submit);
            b.wait_for_element("#verification-code", page);
            let code = b
                .execute(
                    "return document.getElementById('verification-code').textContent;",
                    &[],
                )
                .as_str()
                .unwrap()
                .to_string();
            let push = sim.pushes().into_iter().last().unwrap();
            assert_eq!(push.verification_code.as_deref(), Some(code.as_str()));
            let typed = if right {
                code.clone()
            } else {
                format!("9{code}")
            };
            if javascript {
                // The phone page, in another tab: type the code (or a wrong one), approve.
                let main = b.open_tab();
                b.goto(&format!("http://{}/", sim.control_addr()));
                let card = format!("li.push[data-txid=\"{}\"]", push.txid);
                let input = b.wait_for_element(&format!("{card} input.code"), page);
                b.send_keys(&input, &typed);
                let approve = b.find(&format!("{card} button.approve")).unwrap();
                b.click(&approve);
                assert!(wait_until(page, || sim.pushes().iter().any(|p| p.txid
                    == push.txid
                    && p.state != duo_sim::PushState::Pending)));
                b.close_tab(&main);
            } else {
                // The phone page is itself a script: without JavaScript, its API answers.
                sim.approve_with_code(&push.txid, &typed);
            }
            if right {
                b.wait_for_path("/api/health", page).unwrap();
                assert!(b.cookie("check-duo").is_some(), "js {javascript}");
            } else {
                b.wait_for("the denial", page, |b| {
                    b.page_source()
                        .contains("The push was denied on your phone.")
                });
                assert!(b.cookie("check-duo").is_none(), "js {javascript}");
            }
        }
    }
    s.stop();
}
