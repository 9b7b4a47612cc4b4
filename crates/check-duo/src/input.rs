//! What mod_authnz_external hands the program: the credentials (stdin for `pipe`, `USER`/`PASS`
//! for `environment`) and the documented variables `IP`, `URI`, `HTTP_HOST`, `CONTEXT`,
//! `COOKIE`, `HOST`. Nothing else from the environment is read.

use std::fmt;
use std::io::Read;

use duo_auth::Secret;

/// Credentials larger than this are not from Apache.
const MAX_STDIN: u64 = 64 * 1024;
/// Variables larger than this are truncated away (treated as absent), not trusted.
const MAX_VAR: usize = 16 * 1024;

/// How Apache passes the credentials (`DefineExternalAuth NAME pipe|environment …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Pipe,
    Environment,
}

/// `AuthExternalContext` of the location that called the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Context {
    /// The form-submit location: password only.
    Login,
    /// The logout location: end the session on the server.
    Logout,
    /// Any other (or none): the full check.
    Request,
}

/// One request as mod_authnz_external hands it over.
pub struct PipeRequest {
    pub user: String,
    pub password: Secret,
    pub ip: String,
    pub uri: String,
    pub host: String,
    pub context: Context,
    pub cookie: Option<Secret>,
}

impl PipeRequest {
    /// The `AuthExternalContext` word, for the log line.
    pub fn context_str(&self) -> &'static str {
        match self.context {
            Context::Login => "login",
            Context::Logout => "logout",
            Context::Request => "request",
        }
    }

    /// The request as the core sees it, with the session token taken from cookie `name`.
    pub fn to_core(&self, name: &str) -> check_duo_core::Request {
        check_duo_core::Request {
            user: self.user.clone(),
            password: Some(self.password.clone()),
            session: self
                .cookie
                .as_ref()
                .and_then(|c| crate::cookie::find(c.expose(), name))
                .map(Secret::new),
            ip: self.ip.clone(),
            host: self.host.clone(),
            method: String::new(),
            uri: self.uri.clone(),
        }
    }
}

impl fmt::Debug for PipeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeRequest")
            .field("user", &self.user)
            .field("ip", &self.ip)
            .field("uri", &self.uri)
            .field("host", &self.host)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Why the input could not be read (the request is denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The variables the program may read, and only these.
pub const VARIABLES: [&str; 8] = [
    "USER",
    "PASS",
    "IP",
    "URI",
    "HTTP_HOST",
    "CONTEXT",
    "COOKIE",
    "HOST",
];

/// Read a request. `var` looks up one of [`VARIABLES`] (the real environment in `main`).
pub fn read(
    protocol: Protocol,
    stdin: impl Read,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<PipeRequest, InputError> {
    let get = |name: &str| var(name).filter(|v| v.len() <= MAX_VAR);
    let (user, password) = match protocol {
        Protocol::Pipe => read_pipe(stdin)?,
        Protocol::Environment => (
            get("USER").ok_or_else(|| InputError("USER not set".into()))?,
            get("PASS").ok_or_else(|| InputError("PASS not set".into()))?,
        ),
    };
    if user.is_empty() {
        return Err(InputError("empty user name".into()));
    }
    if password.is_empty() {
        return Err(InputError("empty password".into()));
    }
    if user.len() > 256 || user.chars().any(char::is_control) {
        return Err(InputError("malformed user name".into()));
    }
    if password.contains('\0') {
        return Err(InputError("malformed password".into()));
    }
    let context = match get("CONTEXT").as_deref().map(str::trim) {
        Some(c) if c.eq_ignore_ascii_case("login") => Context::Login,
        Some(c) if c.eq_ignore_ascii_case("logout") => Context::Logout,
        _ => Context::Request,
    };
    Ok(PipeRequest {
        user,
        password: Secret::new(password),
        ip: get("IP").unwrap_or_default(),
        uri: get("URI").unwrap_or_default(),
        host: get("HTTP_HOST").or_else(|| get("HOST")).unwrap_or_default(),
        context,
        // Capped like every variable: an oversized Cookie header is no session.
        cookie: get("COOKIE").map(Secret::new),
    })
}

/// `user\npassword\n` then EOF, exactly as mod_authnz_external writes it. The password is raw:
/// spaces, `=`, `&` and `,` are part of it.
fn read_pipe(stdin: impl Read) -> Result<(String, String), InputError> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| InputError(format!("reading stdin: {e}")))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(InputError("stdin too large".into()));
    }
    let text = String::from_utf8(buf).map_err(|_| InputError("stdin is not UTF-8".into()))?;
    let mut lines = text.split('\n');
    let user = lines.next().unwrap_or_default();
    let Some(password) = lines.next() else {
        return Err(InputError("stdin holds no password line".into()));
    };
    match (lines.next(), lines.next()) {
        (None, _) | (Some(""), None) => {}
        _ => return Err(InputError("stdin holds more than two lines".into())),
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn pipe_reads_two_lines() {
        let r = read(
            Protocol::Pipe,
            &b"alice\npa ss=&,x\n"[..],
            &env(&[("CONTEXT", "login"), ("IP", "10.0.0.1")]),
        )
        .unwrap();
        assert_eq!(r.user, "alice");
        assert_eq!(r.password.expose(), "pa ss=&,x");
        assert_eq!(r.context, Context::Login);
        assert_eq!(r.ip, "10.0.0.1");
        // No trailing newline is tolerated.
        assert!(read(Protocol::Pipe, &b"alice\npw"[..], &env(&[])).is_ok());
    }

    #[test]
    fn pipe_rejects_malformed() {
        for input in [
            &b""[..],
            b"alice",
            b"alice\n",
            b"\npw\n",
            b"alice\npw\nextra\n",
            b"al\x00ice\npw\n",
            b"\xff\npw\n",
            b"alice\np\x00w\n",
        ] {
            assert!(read(Protocol::Pipe, input, &env(&[])).is_err(), "{input:?}");
        }
        let big = vec![b'a'; 70_000];
        assert!(read(Protocol::Pipe, &big[..], &env(&[])).is_err());
    }

    #[test]
    fn environment_protocol() {
        let r = read(
            Protocol::Environment,
            &b""[..],
            &env(&[("USER", "bob"), ("PASS", "pw"), ("HTTP_HOST", "h.example")]),
        )
        .unwrap();
        assert_eq!(r.user, "bob");
        assert_eq!(r.host, "h.example");
        assert_eq!(r.context, Context::Request);
        assert!(read(Protocol::Environment, &b""[..], &env(&[("USER", "bob")])).is_err());
    }

    #[test]
    fn an_oversized_cookie_is_no_cookie() {
        let big = format!("formsession={}", "A".repeat(MAX_VAR));
        let r = read(
            Protocol::Pipe,
            &b"alice\npw\n"[..],
            &env(&[("COOKIE", &big)]),
        )
        .unwrap();
        assert!(r.cookie.is_none());
        let ok = read(
            Protocol::Pipe,
            &b"alice\npw\n"[..],
            &env(&[("COOKIE", "formsession=abc")]),
        )
        .unwrap();
        assert_eq!(ok.to_core("formsession").session.unwrap().expose(), "abc");
    }

    #[test]
    fn debug_hides_secrets() {
        let r = read(
            Protocol::Pipe,
            &b"alice\nhunter2\n"[..],
            &env(&[("COOKIE", "formsession=SECRETCOOKIE")]),
        )
        .unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("hunter2") && !d.contains("SECRETCOOKIE"), "{d}");
    }
}
