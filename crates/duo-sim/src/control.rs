//! The control listener (plain HTTP, loopback): a JSON API for tests and scripts, and a small
//! HTML page that plays the user's phone. Routes:
//!
//! * `GET /` — the phone page.
//! * `GET /api/pushes` — every transaction, oldest first.
//! * `POST /api/pushes/{txid|latest}/approve` and `/deny` — decide a pending push. Approving a
//!   Verified Duo Push takes its code, as JSON `{"code":"123"}` or a form `code=123`; a wrong or
//!   missing code denies it, as Duo Mobile does. The answer names the state it ended in.
//! * `GET /api/counters` — calls per endpoint, 401s, 429s, pushes per user.
//! * `POST /api/reset` — forget pushes, counters and rate-limit tallies.
//! * `PUT /api/behaviours` — replace the behaviours (a users-file document).

use serde_json::json;

use crate::api::Handled;
use crate::behaviour::Behaviours;
use crate::http::{Request, Response};
use crate::state::{PushState, State};

pub(crate) fn handle(state: &State, req: &Request) -> Handled {
    let response = route(state, req);
    // Reads are polled every second by the page: log only what changes something.
    let log = if req.method == "GET" {
        String::new()
    } else {
        format!("control {} {} -> {}", req.method, req.path, response.status)
    };
    Handled { response, log }
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"ok": false, "error": message}))
}

fn route(state: &State, req: &Request) -> Response {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", [""]) | ("GET", ["index.html"]) => {
            Response::new(200, "text/html; charset=utf-8", PHONE_PAGE)
        }
        ("GET", ["api", "pushes"]) => match serde_json::to_value(state.pushes()) {
            Ok(v) => Response::json(200, &v),
            Err(e) => error(500, &e.to_string()),
        },
        ("POST", ["api", "pushes", txid, action]) => {
            let decided = match *action {
                "approve" => PushState::Allow,
                "deny" => PushState::Deny,
                _ => return error(404, "unknown action"),
            };
            match state.decide_code(txid, decided, body_code(req).as_deref()) {
                Some((id, ended)) => {
                    Response::json(200, &json!({"ok": true, "txid": id, "state": ended}))
                }
                None => error(404, "no such pending push"),
            }
        }
        ("GET", ["api", "counters"]) => match serde_json::to_value(state.counters()) {
            Ok(v) => Response::json(200, &v),
            Err(e) => error(500, &e.to_string()),
        },
        ("POST", ["api", "reset"]) => {
            state.reset();
            Response::json(200, &json!({"ok": true}))
        }
        ("PUT", ["api", "behaviours"]) | ("POST", ["api", "behaviours"]) => {
            let text = String::from_utf8_lossy(&req.body);
            match Behaviours::from_json(&text, "request body") {
                Ok(b) => {
                    state.set_behaviours(b);
                    Response::json(200, &json!({"ok": true}))
                }
                Err(e) => error(400, &e),
            }
        }
        (_, ["api", ..]) | (_, [""]) => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// The `code` of an approve request: a JSON object's, or a form's.
fn body_code(req: &Request) -> Option<String> {
    let text = std::str::from_utf8(&req.body).ok()?.trim();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        return match v.get("code")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
    }
    crate::verify::form_decode(text)
        .into_iter()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v)
}

/// The phone. Stable hooks for WebDriver: `#pending` holds one `li.push[data-txid]` per
/// pending push, each with `button.approve` and `button.deny` (and, for a Verified Duo Push,
/// `input.code`, which Approve sends); `#history` holds decided ones as
/// `li.push.done[data-state]`. Items are updated in place, never rebuilt, so element
/// references stay valid across polls. Everything shown is set with `textContent`: pushinfo
/// comes from clients.
const PHONE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>duo-sim phone</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f2f4f7; color: #1d2433; }
header { background: #2d7d3a; color: #fff; padding: 12px 16px; font-size: 1.1em; }
main { padding: 12px; max-width: 480px; margin: auto; }
ul { list-style: none; padding: 0; margin: 0; }
li.push { background: #fff; border-radius: 10px; padding: 12px; margin-bottom: 12px;
  box-shadow: 0 1px 3px rgba(0,0,0,.15); }
.user { font-weight: 600; font-size: 1.1em; }
.where { font-size: 1.25em; margin: 6px 0; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 6px 0;
  font-size: .9em; }
dt { color: #667; } dd { margin: 0; word-break: break-all; }
.buttons { display: flex; gap: 10px; margin-top: 8px; }
button { flex: 1; font-size: 1.1em; padding: 12px; border: 0; border-radius: 8px; color: #fff; }
label.code-label { display: block; margin: 8px 0; } input.code { font-size: 1.3em; width: 5em; }
button.approve { background: #2d7d3a; } button.deny { background: #b3261e; }
li.done { opacity: .7; } .state { font-weight: 600; }
#empty { color: #667; text-align: center; margin: 24px 0; }
h2 { font-size: 1em; color: #667; margin: 20px 0 8px; }
</style>
</head>
<body>
<header>duo-sim phone</header>
<main>
<p id="empty">No pending login requests.</p>
<ul id="pending"></ul>
<h2>Recent</h2>
<ul id="history"></ul>
</main>
<script>
"use strict";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function card(p) {
  const li = el("li", "push");
  li.dataset.txid = p.txid;
  li.appendChild(el("div", "user", p.display_username || p.username));
  const info = p.pushinfo || {};
  const where = [info.host, info.path].filter(Boolean).join(" ");
  if (where) li.appendChild(el("div", "where", where));
  const dl = el("dl", "info");
  const rows = [["user", p.username], ["factor", p.factor], ["ip", p.ipaddr || ""],
    ["time", new Date(p.created_ms).toLocaleTimeString()]];
  for (const k of Object.keys(info).sort()) rows.push([k, info[k]]);
  for (const [k, v] of rows) { dl.appendChild(el("dt", "", k)); dl.appendChild(el("dd", "", v)); }
  li.appendChild(dl);
  if (p.verification_code) {
    const label = el("label", "code-label", "Enter the code shown at login ");
    const input = el("input", "code");
    input.inputMode = "numeric"; input.autocomplete = "off"; input.maxLength = 10;
    label.appendChild(input);
    li.appendChild(label);
  }
  const buttons = el("div", "buttons");
  for (const action of ["approve", "deny"]) {
    const b = el("button", action, action === "approve" ? "Approve" : "Deny");
    b.type = "button";
    b.addEventListener("click", () => {
      const input = li.querySelector("input.code");
      decide(p.txid, action, input ? input.value : null);
    });
    buttons.appendChild(b);
  }
  li.appendChild(buttons);
  return li;
}
async function decide(txid, action, code) {
  const init = {method: "POST"};
  if (code !== null) {
    init.headers = {"Content-Type": "application/json"};
    init.body = JSON.stringify({code: code});
  }
  await fetch("/api/pushes/" + encodeURIComponent(txid) + "/" + action, init);
  refresh();
}
async function refresh() {
  let pushes;
  try { pushes = await (await fetch("/api/pushes", {cache: "no-store"})).json(); }
  catch (e) { return; }
  const pending = document.getElementById("pending");
  const history = document.getElementById("history");
  const seen = new Set();
  for (const p of pushes.slice().reverse()) {
    seen.add(p.txid);
    let li = document.querySelector('li.push[data-txid="' + CSS.escape(p.txid) + '"]');
    if (p.state === "pending") {
      if (!li) pending.appendChild(card(p));
    } else if (!li || !li.classList.contains("done")) {
      if (li) li.remove();
      const done = card(p);
      done.classList.add("done");
      done.dataset.state = p.state;
      done.querySelector(".buttons").replaceWith(el("div", "state", p.state));
      history.prepend(done);
    }
  }
  for (const li of document.querySelectorAll("li.push")) {
    if (!seen.has(li.dataset.txid)) li.remove();
  }
  document.getElementById("empty").hidden = pending.children.length > 0;
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_the_hooks() {
        for hook in [
            "id=\"pending\"",
            "id=\"history\"",
            "\"li\", \"push\"",
            "dataset.txid",
            "\"approve\", \"deny\"",
            "input.code",
            "verification_code",
        ] {
            assert!(PHONE_PAGE.contains(hook), "{hook}");
        }
        assert!(!PHONE_PAGE.contains("innerHTML"));
    }
}
