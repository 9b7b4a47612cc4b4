//! Request authentication as a pure function of the request's parts, the keys and "now": the
//! `Authorization` header, the date window, and the signature under each version Duo accepts.
//! The canonical strings themselves come from `duo_auth::sign`, which passes Duo's published
//! vectors; this module only decides which parts of a request go into them.

use std::time::Duration;

use duo_auth::sign::{self, Canonical, SigVersion};

/// The parts of a request that authentication looks at, as they came off the wire.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The request target's path, without the query.
    pub path: &'a str,
    /// The raw query string (after `?`), possibly empty.
    pub query: &'a str,
    /// All headers, names in any case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_json(&self) -> bool {
        self.header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false)
    }

    /// The parameters an endpoint sees: query pairs, then form-body pairs or the members of a
    /// JSON body (strings as they are, other values as JSON text).
    pub fn params(&self) -> Result<Vec<(String, String)>, Rejection> {
        let mut out = form_decode(self.query);
        if self.body.is_empty() {
            return Ok(out);
        }
        if self.is_json() {
            let v: serde_json::Value =
                serde_json::from_slice(self.body).map_err(|_| Rejection::BadBody)?;
            let obj = v.as_object().ok_or(Rejection::BadBody)?;
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push((k.clone(), s));
            }
        } else {
            let text = std::str::from_utf8(self.body).map_err(|_| Rejection::BadBody)?;
            out.extend(form_decode(text));
        }
        Ok(out)
    }

    /// The pairs the v2 params line signs: query plus form body (a JSON body is not a form).
    fn signed_form_params(&self) -> Vec<(String, String)> {
        let mut out = form_decode(self.query);
        if !self.is_json() {
            if let Ok(text) = std::str::from_utf8(self.body) {
                out.extend(form_decode(text));
            }
        }
        out
    }
}

/// Why a request was refused. Every variant is a 401 except `BadBody` (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization` header, or not `Basic base64(ikey:hex)`.
    MissingCredentials,
    /// An ikey that is not ours.
    UnknownIkey,
    /// No `Date` / `X-Duo-Date` header.
    MissingDate,
    /// A date that does not parse as RFC 2822.
    BadDate,
    /// A date further than the window from the simulator's clock (`skew` = date - now).
    DateOutOfWindow { skew: i64 },
    /// No signature version matches.
    BadSignature,
    /// A body that is neither a form nor a JSON object.
    BadBody,
}

impl Rejection {
    /// The Duo error code; the HTTP status is its first three digits.
    pub fn code(&self) -> u32 {
        match self {
            Rejection::MissingCredentials | Rejection::UnknownIkey => 40101,
            Rejection::MissingDate
            | Rejection::BadDate
            | Rejection::DateOutOfWindow { .. }
            | Rejection::BadSignature => 40103,
            Rejection::BadBody => 40002,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Rejection::MissingCredentials => "Missing request credentials",
            Rejection::UnknownIkey => "Invalid integration key in request credentials",
            Rejection::BadBody => "Invalid request parameters",
            _ => "Invalid signature in request credentials",
        }
    }

    /// Why, for `message_detail` and the log (never the signature itself).
    pub fn detail(&self) -> String {
        match self {
            Rejection::MissingCredentials => "no Basic Authorization header".into(),
            Rejection::UnknownIkey => "unknown integration key".into(),
            Rejection::MissingDate => "missing Date header".into(),
            Rejection::BadDate => "Date header is not RFC 2822".into(),
            Rejection::DateOutOfWindow { skew } => {
                format!("Date header is {skew} s from the server's clock")
            }
            Rejection::BadSignature => "signature does not match".into(),
            Rejection::BadBody => "body is neither a form nor a JSON object".into(),
        }
    }
}

/// A request that passed: which version signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub ikey: String,
    pub version: SigVersion,
}

/// Authenticate a request against one ikey/skey at time `now_unix` (the simulator's clock),
/// accepting a date at most `window` away.
///
/// A 40-hex signature is tried as v2 HMAC-SHA1; a 128-hex one as v2 HMAC-SHA512 and as v5.
/// The date is `X-Duo-Date` when present, else `Date`, and is signed byte for byte as sent. The
/// signed host is the `Host` header without port, lower-cased. Form and query parameters are
/// decoded (`+` is a space) and canonicalised again, since clients differ in how they encode.
pub fn verify_request(
    parts: &RequestParts<'_>,
    ikey: &str,
    skey: &str,
    now_unix: i64,
    window: Duration,
) -> Result<Verified, Rejection> {
    let (presented_ikey, sig) = parts
        .header("authorization")
        .and_then(sign::parse_authorization)
        .ok_or(Rejection::MissingCredentials)?;
    if presented_ikey != ikey {
        return Err(Rejection::UnknownIkey);
    }
    let date = parts
        .header("x-duo-date")
        .or_else(|| parts.header("date"))
        .ok_or(Rejection::MissingDate)?;
    let when = parse_date(date).ok_or(Rejection::BadDate)?;
    let skew = when.saturating_sub(now_unix);
    let limit = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if skew.unsigned_abs() > limit.unsigned_abs() {
        return Err(Rejection::DateOutOfWindow { skew });
    }

    let host = parts.header("host").unwrap_or("");
    let form = parts.signed_form_params();
    let v2 = Canonical {
        date,
        method: parts.method,
        host,
        path: parts.path,
        params: &form,
        body: &[],
        x_duo_headers: &[],
    };
    let found = match sig.len() {
        40 => sign::verify(SigVersion::V2Sha1, skey, &v2, &sig).then_some(SigVersion::V2Sha1),
        128 => {
            if sign::verify(SigVersion::V2Sha512, skey, &v2, &sig) {
                Some(SigVersion::V2Sha512)
            } else if verify_v5(parts, date, host, skey, &sig) {
                Some(SigVersion::V5)
            } else {
                None
            }
        }
        _ => None,
    };
    match found {
        Some(version) => Ok(Verified {
            ikey: presented_ikey,
            version,
        }),
        None => Err(Rejection::BadSignature),
    }
}

/// v5: params line from the query only (a POST's parameters travel in the JSON body, which is
/// hashed raw), plus the `X-Duo-*` headers. Whether a client counted `X-Duo-Date` among its
/// signed headers is not knowable, so with one present both readings are tried.
fn verify_v5(parts: &RequestParts<'_>, date: &str, host: &str, skey: &str, sig: &str) -> bool {
    let query = form_decode(parts.query);
    let all_x_duo: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-duo-"))
        .cloned()
        .collect();
    let without_date: Vec<(String, String)> = all_x_duo
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-duo-date"))
        .cloned()
        .collect();
    let mut candidates = vec![without_date];
    if candidates[0].len() != all_x_duo.len() {
        candidates.push(all_x_duo);
    }
    candidates.iter().any(|headers| {
        let req = Canonical {
            date,
            method: parts.method,
            host,
            path: parts.path,
            params: &query,
            body: parts.body,
            x_duo_headers: headers,
        };
        sign::verify(SigVersion::V5, skey, &req, sig)
    })
}

/// Unix seconds of an RFC 2822 date. A date without a zone (`Tue, 17 Nov 2020 14:12:00`,
/// which Duo's own Python test vectors sign) is read as UTC, as Python's `parsedate` reads it.
pub fn parse_date(s: &str) -> Option<i64> {
    sign::parse_rfc2822_date(s).or_else(|| {
        let t = s.trim();
        let last = t.rsplit(' ').next()?;
        let is_time = last.len() == 8 && last.bytes().filter(|b| *b == b':').count() == 2;
        if is_time {
            sign::parse_rfc2822_date(&format!("{t} +0000"))
        } else {
            None
        }
    })
}

/// Decode `application/x-www-form-urlencoded` (also a query string): pairs split on `&`, `+` is
/// a space, `%XX` is a byte; the bytes are read as UTF-8 (invalid sequences replaced). Empty
/// segments are skipped; a segment without `=` has an empty value.
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| {
            let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_val(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_val(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                    }
                    // A stray `%` stands for itself, as browsers and Python do.
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Tue, 21 Aug 2012 17:29:18 -0000";
    const NOW: i64 = 1345570158;

    fn headers(auth: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = vec![
            ("Host".to_string(), "127.0.0.1:4443".to_string()),
            ("Date".to_string(), DATE.to_string()),
            ("Authorization".to_string(), auth.to_string()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    fn signed(version: SigVersion, params: &[(String, String)], body: &[u8]) -> String {
        let req = Canonical {
            date: DATE,
            method: "POST",
            host: "127.0.0.1",
            path: "/auth/v2/preauth",
            params,
            body,
            x_duo_headers: &[],
        };
        sign::sign(version, "IKEY", "SKEY", &req)
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(DATE), Some(NOW));
        assert_eq!(parse_date("Tue, 21 Aug 2012 17:29:18"), Some(NOW));
        assert_eq!(parse_date("Tue, 21 Aug 2012 17:29:18 GMT"), Some(NOW));
        assert_eq!(parse_date("Tue, 21 Aug 2012 19:29:18 +0200"), Some(NOW));
        assert_eq!(parse_date("Tue, 21 Aug 2012"), None);
        assert_eq!(parse_date("12:00:00"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_decode("a=b+c&d=%41%2b&&e&f=%zz%"),
            vec![
                ("a".into(), "b c".into()),
                ("d".into(), "A+".into()),
                ("e".into(), "".into()),
                ("f".into(), "%zz%".into())
            ]
        );
        assert_eq!(form_decode("k=%E2%82%AC"), vec![("k".into(), "€".into())]);
    }

    #[test]
    fn plus_for_space_is_accepted() {
        let params = vec![("username".to_string(), "first last".to_string())];
        let auth = signed(SigVersion::V2Sha512, &params, b"");
        let h = headers(&auth, &[]);
        let parts = RequestParts {
            method: "POST",
            path: "/auth/v2/preauth",
            query: "",
            headers: &h,
            body: b"username=first+last",
        };
        let v = verify_request(&parts, "IKEY", "SKEY", NOW, Duration::from_secs(300)).unwrap();
        assert_eq!(v.version, SigVersion::V2Sha512);
        assert_eq!(parts.params().unwrap(), params);
    }

    #[test]
    fn v5_json_body() {
        let body = br#"{"username":"alice"}"#;
        let auth = signed(SigVersion::V5, &[], body);
        let h = headers(&auth, &[("Content-Type", "application/json")]);
        let parts = RequestParts {
            method: "POST",
            path: "/auth/v2/preauth",
            query: "",
            headers: &h,
            body,
        };
        let v = verify_request(&parts, "IKEY", "SKEY", NOW, Duration::from_secs(300)).unwrap();
        assert_eq!(v.version, SigVersion::V5);
        assert_eq!(
            parts.params().unwrap(),
            vec![("username".to_string(), "alice".to_string())]
        );
    }

    #[test]
    fn rejections() {
        let params = vec![("username".to_string(), "alice".to_string())];
        let auth = signed(SigVersion::V2Sha1, &params, b"");
        let h = headers(&auth, &[]);
        let parts = RequestParts {
            method: "POST",
            path: "/auth/v2/preauth",
            query: "",
            headers: &h,
            body: b"username=alice",
        };
        let w = Duration::from_secs(300);
        assert!(verify_request(&parts, "IKEY", "SKEY", NOW, w).is_ok());
        assert_eq!(
            verify_request(&parts, "OTHER", "SKEY", NOW, w),
            Err(Rejection::UnknownIkey)
        );
        assert_eq!(
            verify_request(&parts, "IKEY", "WRONG", NOW, w),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify_request(&parts, "IKEY", "SKEY", NOW + 301, w),
            Err(Rejection::DateOutOfWindow { skew: -301 })
        );
        let tampered = RequestParts {
            body: b"username=mallory",
            ..parts
        };
        assert_eq!(
            verify_request(&tampered, "IKEY", "SKEY", NOW, w),
            Err(Rejection::BadSignature)
        );
        let no_auth: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| k != "Authorization")
            .cloned()
            .collect();
        let unsigned = RequestParts {
            headers: &no_auth,
            ..parts
        };
        assert_eq!(
            verify_request(&unsigned, "IKEY", "SKEY", NOW, w),
            Err(Rejection::MissingCredentials)
        );
        // X-Duo-Date wins over Date.
        let h2 = headers(&auth, &[("X-Duo-Date", "Tue, 21 Aug 2012 17:29:19 -0000")]);
        let other_date = RequestParts {
            headers: &h2,
            ..parts
        };
        assert_eq!(
            verify_request(&other_date, "IKEY", "SKEY", NOW, w),
            Err(Rejection::BadSignature)
        );
    }
}
