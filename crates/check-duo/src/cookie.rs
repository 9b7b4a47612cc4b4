//! Finding the session cookie in the `COOKIE` variable that mod_authnz_external passes.
//!
//! Several `Cookie` header lines arrive merged with `", "` (HTTP/1.1) or `"; "` (HTTP/2), so
//! both separate pairs. mod_session_crypto values are base64 and contain no `,` or `;`.

/// The value of the cookie `name`, if present and non-empty. When the name appears more than
/// once the first wins, as browsers send the most specific path first.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split([';', ','])
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_among_others() {
        assert_eq!(
            find("a=1; formsession=abc==; b=2", "formsession"),
            Some("abc==")
        );
        assert_eq!(find("a=1, formsession=xyz", "formsession"), Some("xyz"));
        assert_eq!(find("formsession=q", "formsession"), Some("q"));
    }

    #[test]
    fn exact_name_only() {
        assert_eq!(find("xformsession=1; formsession2=2", "formsession"), None);
        assert_eq!(find("formsession=", "formsession"), None);
        assert_eq!(find("", "formsession"), None);
        assert_eq!(find(";;,,=", "formsession"), None);
    }

    #[test]
    fn first_wins_and_quotes_dropped() {
        assert_eq!(find("s=\"v1\"; s=v2", "s"), Some("v1"));
    }
}
