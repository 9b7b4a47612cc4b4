//! Duo request signing, as pure functions.
//!
//! Canonical string, signature version 2 (`date\nMETHOD\nhost\npath\nparams`) signed with
//! HMAC-SHA1 (the original) or HMAC-SHA512 (what Duo's own clients use now), and version 5
//! (`…\nparams\nsha512(body)\nsha512(x-duo headers)`, always HMAC-SHA512). The host is lower-cased
//! and never carries a port. Params are percent-encoded over their UTF-8 bytes, leaving only
//! `A-Z a-z 0-9 - . _ ~`, with upper-case hex, then sorted by encoded key and encoded value.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Which canonical layout and which HMAC digest sign a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SigVersion {
    /// Layout v2, HMAC-SHA1: the original; servers still accept it.
    V2Sha1,
    /// Layout v2, HMAC-SHA512, form-encoded bodies: what duo_unix and the Go client send.
    #[default]
    V2Sha512,
    /// Layout v5, HMAC-SHA512, JSON bodies: what the Python client sends.
    V5,
}

/// One request as far as the signature sees it.
#[derive(Clone, Debug, Default)]
pub struct Canonical<'a> {
    pub date: &'a str,
    pub method: &'a str,
    /// Host as configured; the port, if any, is dropped and the rest lower-cased.
    pub host: &'a str,
    pub path: &'a str,
    /// Form or query parameters (empty for a v5 POST, whose parameters travel in `body`).
    pub params: &'a [(String, String)],
    /// Request body for v5 (a JSON document for POST, empty for GET).
    pub body: &'a [u8],
    /// `X-Duo-*` headers, for v5.
    pub x_duo_headers: &'a [(String, String)],
}

/// Percent-encode as Duo does: every byte but `A-Z a-z 0-9 - . _ ~`, upper-case hex.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical parameter string: encoded pairs sorted by key, then value, joined with `&`.
pub fn canon_params(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Hex SHA-512 of the `X-Duo-*` headers: names lower-cased and sorted, names and values joined
/// with NUL.
pub fn canon_x_duo_headers(headers: &[(String, String)]) -> String {
    let mut lowered: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    lowered.sort();
    let mut joined: Vec<&str> = Vec::with_capacity(lowered.len() * 2);
    for (k, v) in &lowered {
        joined.push(k);
        joined.push(v);
    }
    sha512_hex(joined.join("\0").as_bytes())
}

/// Hex SHA-512 of some bytes.
pub fn sha512_hex(data: &[u8]) -> String {
    hex::encode(Sha512::digest(data))
}

/// The host as signed: no port, lower-case. `[v6]:port` keeps the brackets' content.
pub fn signed_host(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    h.to_ascii_lowercase()
}

/// The canonical string for a request under a signature version.
pub fn canonicalize(version: SigVersion, req: &Canonical<'_>) -> String {
    let mut lines = vec![
        req.date.to_string(),
        req.method.to_ascii_uppercase(),
        signed_host(req.host),
        req.path.to_string(),
        canon_params(req.params),
    ];
    if version == SigVersion::V5 {
        lines.push(sha512_hex(req.body));
        lines.push(canon_x_duo_headers(req.x_duo_headers));
    }
    lines.join("\n")
}

/// Lower-case hex HMAC of the canonical string with the skey.
pub fn signature(version: SigVersion, skey: &str, canonical: &str) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    match version {
        SigVersion::V2Sha1 => Hmac::<sha1::Sha1>::new_from_slice(skey.as_bytes())
            .map(|mac| hex::encode(mac.chain_update(canonical).finalize().into_bytes()))
            .unwrap_or_default(),
        SigVersion::V2Sha512 | SigVersion::V5 => Hmac::<Sha512>::new_from_slice(skey.as_bytes())
            .map(|mac| hex::encode(mac.chain_update(canonical).finalize().into_bytes()))
            .unwrap_or_default(),
    }
}

/// The `Authorization` header value: `Basic base64(ikey:hexsig)`.
pub fn authorization(ikey: &str, signature_hex: &str) -> String {
    let raw = format!("{ikey}:{signature_hex}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Sign a request: the `Authorization` header value.
pub fn sign(version: SigVersion, ikey: &str, skey: &str, req: &Canonical<'_>) -> String {
    authorization(ikey, &signature(version, skey, &canonicalize(version, req)))
}

/// Split a `Basic` header into ikey and hex signature. `None` if it is not one.
pub fn parse_authorization(header: &str) -> Option<(String, String)> {
    let b64 = header.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (ikey, sig) = raw.split_once(':')?;
    Some((ikey.to_string(), sig.to_string()))
}

/// Check a presented hex signature in constant time against the expected one.
pub fn verify(version: SigVersion, skey: &str, req: &Canonical<'_>, presented_hex: &str) -> bool {
    let expected = signature(version, skey, &canonicalize(version, req));
    let presented = presented_hex.to_ascii_lowercase();
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// An RFC 2822 date as Duo's clients write it: `Tue, 21 Aug 2012 17:29:18 -0000`.
pub fn rfc2822_date(unix_seconds: i64) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} -0000",
        DAYS[usize::from(dt.weekday().number_days_from_monday())],
        dt.day(),
        MONTHS[usize::from(u8::from(dt.month()) - 1)],
        dt.year(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Parse an RFC 2822 date (as [`rfc2822_date`] writes it, or with a numeric or `GMT` zone) to
/// Unix seconds.
pub fn parse_rfc2822_date(s: &str) -> Option<i64> {
    let s = s.trim();
    // `-0000` means "UTC, zone unknown"; the time crate wants a sign it understands.
    let normalized = if let Some(rest) = s.strip_suffix("-0000") {
        format!("{rest}+0000")
    } else if let Some(rest) = s.strip_suffix("GMT") {
        format!("{rest}+0000")
    } else {
        s.to_string()
    };
    time::OffsetDateTime::parse(&normalized, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(|d| d.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_only() {
        assert_eq!(encode("a b+~*"), "a%20b%2B~%2A");
    }

    #[test]
    fn host_drops_port_and_case() {
        assert_eq!(
            signed_host("API-X.duosecurity.com:8443"),
            "api-x.duosecurity.com"
        );
        assert_eq!(signed_host("127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(signed_host("[::1]:9000"), "::1");
        assert_eq!(signed_host("Localhost"), "localhost");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc2822_date(1345570158), "Tue, 21 Aug 2012 17:29:18 -0000");
        assert_eq!(
            parse_rfc2822_date("Tue, 21 Aug 2012 17:29:18 -0000"),
            Some(1345570158)
        );
        assert_eq!(
            parse_rfc2822_date("Tue, 21 Aug 2012 17:29:18 +0000"),
            Some(1345570158)
        );
        assert_eq!(parse_rfc2822_date("yesterday"), None);
    }

    #[test]
    fn verify_rejects_a_changed_param() {
        let params = vec![("username".to_string(), "alice".to_string())];
        let req = Canonical {
            date: "Tue, 21 Aug 2012 17:29:18 -0000",
            method: "POST",
            host: "h",
            path: "/auth/v2/preauth",
            params: &params,
            ..Default::default()
        };
        let sig = signature(
            SigVersion::V2Sha512,
            "k",
            &canonicalize(SigVersion::V2Sha512, &req),
        );
        assert!(verify(SigVersion::V2Sha512, "k", &req, &sig));
        let other = vec![("username".to_string(), "mallory".to_string())];
        let forged = Canonical {
            params: &other,
            ..req.clone()
        };
        assert!(!verify(SigVersion::V2Sha512, "k", &forged, &sig));
        assert!(!verify(SigVersion::V2Sha512, "other", &req, &sig));
    }
}
