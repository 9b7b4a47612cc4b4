//! The portal's HTML: one layout, no external asset, a strict Content-Security-Policy (the one
//! style sheet and the one script are allowed by their hashes), readable on a phone, labelled
//! fields, a visible focus, dark-on-light text above WCAG AA contrast.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;color:#1a1a1a;background:#f4f4f4;margin:0}\
main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 3px #0003}\
h1{font-size:1.4rem;margin-top:0}\
label{display:block;margin:.8rem 0 .2rem;font-weight:600}\
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #555;border-radius:4px}\
fieldset{border:1px solid #999;border-radius:4px;margin:1rem 0;padding:.5rem .8rem}\
fieldset label{display:inline;font-weight:400;margin:0 .8rem 0 .2rem}\
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem;border:0;border-radius:4px;background:#0b5394;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#0b5394;border:1px solid #0b5394}\
:focus-visible{outline:3px solid #e69138;outline-offset:2px}\
.error{color:#8b0000;background:#fdecea;padding:.6rem;border-radius:4px}\
.status{background:#eaf2fb;padding:.6rem;border-radius:4px}\
.code{font-size:2rem;letter-spacing:.3rem;font-weight:700}\
a{color:#0b5394}";

/// Polls the sign-in's state and reloads the page when it changes (the page works without it:
/// a `<noscript>` refresh does the same).
const SCRIPT: &str = "(function(){var b=document.body,s=b.getAttribute('data-state'),u=b.getAttribute('data-poll');\
if(!u)return;function t(){fetch(u,{credentials:'same-origin',cache:'no-store'})\
.then(function(r){return r.json()}).then(function(j){if(j.state!==s){location.reload()}else{setTimeout(t,1000)}})\
.catch(function(){setTimeout(t,3000)})}setTimeout(t,1000)})();";

fn hash(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// The Content-Security-Policy of every portal page.
pub fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    })
}

/// Text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A page to send.
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub body: String,
    /// `data-state` and `data-poll` for the script (the waiting page).
    pub poll: Option<(String, String)>,
    /// `<meta http-equiv=refresh>`: seconds and, if any, the URL to go to.
    pub refresh: Option<(u32, Option<String>)>,
    /// Refresh only without JavaScript (the script follows the state otherwise).
    pub refresh_noscript: bool,
    pub cookies: Vec<String>,
}

impl Page {
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.into(),
            body: body.into(),
            poll: None,
            refresh: None,
            refresh_noscript: false,
            cookies: Vec::new(),
        }
    }

    pub fn status(mut self, s: StatusCode) -> Page {
        self.status = s;
        self
    }

    pub fn cookie(mut self, c: String) -> Page {
        self.cookies.push(c);
        self
    }

    fn html(&self) -> String {
        let refresh = match &self.refresh {
            Some((secs, url)) => {
                let content = match url {
                    Some(u) => format!("{secs};url={u}"),
                    None => secs.to_string(),
                };
                let meta = format!(r#"<meta http-equiv="refresh" content="{}">"#, esc(&content));
                if self.refresh_noscript {
                    format!("<noscript>{meta}</noscript>")
                } else {
                    meta
                }
            }
            None => String::new(),
        };
        let (body_attrs, script) = match &self.poll {
            Some((state, url)) => (
                format!(r#" data-state="{}" data-poll="{}""#, esc(state), esc(url)),
                format!("<script>{SCRIPT}</script>"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\">\
             <title>{title}</title><style>{STYLE}</style>{refresh}</head>\
             <body{body_attrs}><main>\n<h1>{title}</h1>\n{body}\n</main>{script}</body></html>\n",
            title = esc(&self.title),
            body = self.body,
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = self.html();
        let mut r = (self.status, html).into_response();
        let h = r.headers_mut();
        let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        set(h, "content-type", "text/html; charset=utf-8");
        set(h, "content-security-policy", csp());
        set(h, "cache-control", "no-store");
        set(h, "x-content-type-options", "nosniff");
        set(h, "x-frame-options", "DENY");
        set(h, "referrer-policy", "no-referrer");
        for c in &self.cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append("set-cookie", v);
            }
        }
        r
    }
}

/// A `<p>` that screen readers announce.
pub fn error(msg: &str) -> String {
    format!(r#"<p class="error" role="alert">{}</p>"#, esc(msg))
}

pub fn status(msg: &str) -> String {
    format!(
        r#"<p class="status" role="status" aria-live="polite">{}</p>"#,
        esc(msg)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let c = csp();
        assert!(c.contains(&format!("'sha256-{}'", hash(STYLE))));
        assert!(c.contains(&format!("'sha256-{}'", hash(SCRIPT))));
        assert!(c.starts_with("default-src 'none'"));
        assert!(!c.contains("unsafe"));
    }
}
