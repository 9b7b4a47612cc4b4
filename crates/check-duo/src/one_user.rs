//! The pipe mode's config for one request: the file with its `usernames` object cut down to the
//! requesting user's entry, so that a request costs the same with 10,000 users as with one.
//!
//! [`reduce`] reads the file once through a fixed buffer (a whole 1 MB file in memory costs
//! more in page faults than the rest of the warm path) and copies everything but the other users'
//! entries: those are stepped over with `memchr`, never decoded, checked or allocated. The
//! reduced text is then read by the same serde code as the whole file, so every key outside
//! `usernames`, and the user's own entry, is checked exactly as `config check` and `serve`
//! check it. The newlines of the entries left out stay, so the line numbers in serde's messages
//! are the file's.
//!
//! What the pipe mode does not check, and `config check` and `serve` do: the other users'
//! entries (their hashes, their UTF-8, control characters in them), and `groups` and `totp`
//! entries that name users who do not exist. Whatever the scanner does not follow (a document
//! that is not an object, another user's entry that is not a string, nesting deeper than
//! [`MAX_DEPTH`], a string broken off by the end of the file) it leaves to the whole file's
//! parse: [`Reduced::Unsure`].

use std::io::{self, Read};

/// The read buffer: the file goes through it, never held whole.
pub const BUF: usize = 64 * 1024;
/// Objects and arrays nested deeper than this are left to the full parse.
pub const MAX_DEPTH: usize = 64;
/// Raw key bytes kept for the comparison with the user name: a user name has at most 256
/// bytes, and one byte is at most 6 bytes of JSON (`\u0041`), so a longer key is another user.
const MAX_KEY: usize = 256 * 6;

/// What [`reduce`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reduced {
    /// The document with each top-level `usernames` object holding only the user's entries (in
    /// their order: a second one is the config's error to report), and how many entries the
    /// `usernames` objects had in all.
    Text { text: Vec<u8>, users: usize },
    /// Not a document the scanner follows: read the whole file.
    Unsure,
}

/// Why [`reduce`] stopped.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// More than `limit` bytes.
    TooLarge,
}

enum Stop {
    Error(Error),
    Unsure,
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Error(Error::Io(e))
    }
}

type Step<T> = Result<T, Stop>;

/// A buffer for a file of `size` bytes: the whole file and one byte more (so that one read sees
/// it all and the next its end), at most [`BUF`]. Untouched pages of a larger buffer would cost
/// the one-user config a page fault each.
pub fn buffer_len(size: u64) -> usize {
    usize::try_from(size.saturating_add(1)).map_or(BUF, |n| n.clamp(1, BUF))
}

/// Read a JSON config from `src` (at most `limit` bytes; `size`, its length as `stat` says, sizes
/// the buffer: a small file gets a small one) and keep, of its top-level `usernames` object,
/// only the entries of `user`.
pub fn reduce(src: impl Read, user: &str, limit: u64, size: u64) -> Result<Reduced, Error> {
    let mut s = Scanner {
        src,
        buf: vec![0; buffer_len(size)].into_boxed_slice(),
        pos: 0,
        len: 0,
        read: 0,
        limit,
        out: Vec::with_capacity(4096),
        copying: true,
        mark: 0,
        key: Vec::with_capacity(64),
        users: 0,
        newlines: 0,
    };
    match s.document(user.as_bytes()) {
        Ok(()) => Ok(Reduced::Text {
            text: s.out,
            users: s.users,
        }),
        Err(Stop::Unsure) => Ok(Reduced::Unsure),
        Err(Stop::Error(e)) => Err(e),
    }
}

struct Scanner<R> {
    src: R,
    buf: Box<[u8]>,
    /// The next byte, and the end of what was read into `buf`.
    pos: usize,
    len: usize,
    /// Bytes read from `src` so far.
    read: u64,
    limit: u64,
    /// The reduced document.
    out: Vec<u8>,
    /// Whether the bytes from `mark` on go to `out` (flushed when the buffer is refilled).
    copying: bool,
    mark: usize,
    /// The raw bytes of the last key read (up to [`MAX_KEY`]), and whether it was longer.
    key: Vec<u8>,
    users: usize,
    /// Newlines of what was left out, not yet written to `out`.
    newlines: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<R: Read> Scanner<R> {
    /// Called when every byte of the buffer was used: read the next part. False at the end.
    fn refill(&mut self) -> Step<bool> {
        if self.copying {
            self.out.extend_from_slice(&self.buf[self.mark..self.len]);
        }
        let n = loop {
            match self.src.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            return Err(Stop::Error(Error::TooLarge));
        }
        self.pos = 0;
        self.len = n;
        self.mark = 0;
        Ok(n > 0)
    }

    fn peek(&mut self) -> Step<Option<u8>> {
        if self.pos == self.len && !self.refill()? {
            return Ok(None);
        }
        Ok(Some(self.buf[self.pos]))
    }

    /// The next byte, consumed; the end of the file here is not a document to follow.
    fn next(&mut self) -> Step<u8> {
        let b = self.peek()?.ok_or(Stop::Unsure)?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Step<()> {
        if self.next()? == want {
            Ok(())
        } else {
            Err(Stop::Unsure)
        }
    }

    fn copy(&mut self, on: bool) {
        self.flush_newlines();
        if self.copying && !on {
            self.out.extend_from_slice(&self.buf[self.mark..self.pos]);
        }
        if on && !self.copying {
            self.mark = self.pos;
        }
        self.copying = on;
    }

    fn flush_newlines(&mut self) {
        self.out.resize(self.out.len() + self.newlines, b'\n');
        self.newlines = 0;
    }

    /// Skip white space and peek at the byte after it. Newlines that are not copied are
    /// written anyway, so that the reduced text keeps the file's line numbers.
    fn ws(&mut self) -> Step<Option<u8>> {
        loop {
            if self.pos == self.len && !self.refill()? {
                return Ok(None);
            }
            let rest = &self.buf[self.pos..self.len];
            let n = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
            if !self.copying {
                self.newlines += rest[..n].iter().filter(|&&b| b == b'\n').count();
            }
            self.pos += n;
            if let Some(&b) = rest.get(n) {
                return Ok(Some(b));
            }
        }
    }

    /// A string, its opening quote next. With `keep`, its raw bytes (between the quotes, up to
    /// [`MAX_KEY`] and one more) go to `self.key`.
    fn string(&mut self, keep: bool) -> Step<()> {
        self.expect(b'"')?;
        if keep {
            self.key.clear();
        }
        loop {
            if self.pos == self.len && !self.refill()? {
                return Err(Stop::Unsure);
            }
            let rest = &self.buf[self.pos..self.len];
            let (seg, stop) = match memchr::memchr2(b'"', b'\\', rest) {
                Some(i) => (&rest[..i], Some(rest[i])),
                None => (rest, None),
            };
            if keep && self.key.len() <= MAX_KEY {
                let room = MAX_KEY + 1 - self.key.len();
                self.key.extend_from_slice(&seg[..seg.len().min(room)]);
            }
            self.pos += seg.len();
            match stop {
                None => {}
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => {
                    self.pos += 1;
                    let e = self.next()?;
                    let mut raw = [b'\\', e, 0, 0, 0, 0];
                    let n = match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' => {
                            for slot in &mut raw[2..] {
                                let h = self.next()?;
                                if !h.is_ascii_hexdigit() {
                                    return Err(Stop::Unsure);
                                }
                                *slot = h;
                            }
                            6
                        }
                        _ => return Err(Stop::Unsure),
                    };
                    if keep && self.key.len() <= MAX_KEY {
                        self.key.extend_from_slice(&raw[..n]);
                    }
                }
            }
        }
    }

    /// Whether the last key read is `name`.
    fn key_is(&self, name: &[u8]) -> bool {
        if self.key.len() > MAX_KEY {
            return false;
        }
        if !self.key.contains(&b'\\') {
            return self.key == name;
        }
        let mut quoted = Vec::with_capacity(self.key.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&self.key);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k.as_bytes() == name)
    }

    /// Any value (copied: serde checks it again, so this only has to find where it ends).
    fn value(&mut self, depth: usize) -> Step<()> {
        if depth > MAX_DEPTH {
            return Err(Stop::Unsure);
        }
        match self.ws()?.ok_or(Stop::Unsure)? {
            b'"' => self.string(false),
            open @ (b'{' | b'[') => {
                self.pos += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                if self.ws()? == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.ws()?;
                        self.string(false)?;
                        self.ws()?;
                        self.expect(b':')?;
                    }
                    self.value(depth + 1)?;
                    match self.ws()? {
                        Some(b',') => self.pos += 1,
                        Some(b) if b == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(Stop::Unsure),
                    }
                }
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                // A number or a literal: up to the next delimiter (serde judges the word).
                while let Some(b) = self.peek()? {
                    if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')) {
                        break;
                    }
                    self.pos += 1;
                }
                Ok(())
            }
            _ => Err(Stop::Unsure),
        }
    }

    fn document(&mut self, user: &[u8]) -> Step<()> {
        if self.ws()? != Some(b'{') {
            return Err(Stop::Unsure);
        }
        self.pos += 1;
        if self.ws()? == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.ws()?;
                self.string(true)?;
                let usernames = self.key_is(b"usernames");
                self.ws()?;
                self.expect(b':')?;
                if usernames && self.ws()? == Some(b'{') {
                    self.usernames(user)?;
                } else {
                    self.value(1)?;
                }
                match self.ws()? {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Stop::Unsure),
                }
            }
        }
        // The rest as it is: serde says whether anything but white space follows.
        while self.peek()?.is_some() {
            self.pos = self.len;
        }
        self.copy(false);
        Ok(())
    }

    /// The `usernames` object, its `{` next: only `user`'s entries are copied.
    fn usernames(&mut self, user: &[u8]) -> Step<()> {
        self.pos += 1;
        self.copy(false);
        let mut kept = 0;
        let mut first = true;
        loop {
            match self.other_entries(user) {
                Fast::Skipped => {
                    first = false;
                    continue;
                }
                Fast::End => break,
                Fast::Slow => {}
            }
            // One entry byte by byte: the user's, or one across the end of the buffer.
            let next = self.ws()?;
            if first && next == Some(b'}') {
                break;
            }
            first = false;
            self.string(true)?;
            self.users += 1;
            self.ws()?;
            self.expect(b':')?;
            let next = self.ws()?;
            if self.key_is(user) {
                self.flush_newlines();
                if kept > 0 {
                    self.out.push(b',');
                }
                kept += 1;
                self.out.push(b'"');
                self.out.extend_from_slice(&self.key);
                self.out.extend_from_slice(b"\":");
                self.copy(true);
                self.value(2)?;
                self.copy(false);
            } else if next == Some(b'"') {
                self.string(false)?;
            } else {
                return Err(Stop::Unsure);
            }
            match self.ws()? {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                _ => return Err(Stop::Unsure),
            }
        }
        self.copy(true);
        self.pos += 1;
        Ok(())
    }

    /// The next entries of `usernames` while they are other users', all of each (and the comma
    /// after it) in the buffer before its next backslash (so that every quote ends a string, and
    /// no key is an escaped spelling of the user's name): stepped over in one tight loop. This is
    /// the loop that 10,000 users go through; anything else is [`Fast::Slow`], left to the
    /// byte-by-byte path, which starts that entry again.
    fn other_entries(&mut self, user: &[u8]) -> Fast {
        let limit =
            memchr::memchr(b'\\', &self.buf[self.pos..self.len]).map_or(self.len, |i| self.pos + i);
        let b = &self.buf[..limit];
        let mut at = self.pos;
        let mut newlines = 0;
        let mut end = Fast::Slow;
        loop {
            let mut n = 0;
            let mut ws = |mut i: usize| {
                while let Some(&c) = b.get(i) {
                    if !is_ws(c) {
                        return Some(i);
                    }
                    n += usize::from(c == b'\n');
                    i += 1;
                }
                None
            };
            let entry = (|| {
                let mut i = ws(at)?;
                if b[i] != b'"' {
                    return None;
                }
                let key = i + 1;
                i = key + memchr::memchr(b'"', &b[key..])?;
                if &b[key..i] == user {
                    return None;
                }
                i = ws(i + 1)?;
                if b[i] != b':' {
                    return None;
                }
                i = ws(i + 1)?;
                if b[i] != b'"' {
                    return None;
                }
                let value = i + 1;
                i = value + memchr::memchr(b'"', &b[value..])?;
                i = ws(i + 1)?;
                match b[i] {
                    b',' => Some((i + 1, false)),
                    b'}' => Some((i, true)),
                    _ => None,
                }
            })();
            let Some((next, last)) = entry else { break };
            at = next;
            newlines += n;
            self.users += 1;
            if last {
                end = Fast::End;
                break;
            }
            end = Fast::Skipped;
        }
        self.pos = at;
        self.newlines += newlines;
        end
    }
}

enum Fast {
    /// Other users' entries and their commas.
    Skipped,
    /// Other users' entries, to the end: the `}` is next.
    End,
    /// The next entry is for the byte-by-byte path.
    Slow,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn text(doc: &str, user: &str) -> String {
        let read = |size| match reduce(doc.as_bytes(), user, 1 << 20, size).unwrap() {
            Reduced::Text { text, .. } => String::from_utf8(text).unwrap(),
            Reduced::Unsure => panic!("unsure: {doc}"),
        };
        // A buffer of one byte crosses every boundary.
        let whole = read(u64::MAX);
        assert_eq!(read(0), whole);
        whole
    }

    #[test]
    fn keeps_only_the_user_and_everything_else() {
        let doc = r#"{"duo": {"ikey": "I", "n": [1, 2.5e3, true, null, {"usernames": {"x": 1}}]},
  "usernames": {"bob": "B",
    "alice": "A",
    "carol": "C"},
  "session": {"expiry": 3600}}"#;
        let want = "{\"duo\": {\"ikey\": \"I\", \"n\": [1, 2.5e3, true, null, {\"usernames\": {\"x\": 1}}]},\n  \"usernames\": {\n\"alice\":\"A\"\n},\n  \"session\": {\"expiry\": 3600}}";
        assert_eq!(text(doc, "alice"), want);
        let v: serde_json::Value = serde_json::from_str(&text(doc, "alice")).unwrap();
        assert_eq!(v["usernames"], serde_json::json!({"alice": "A"}));
        assert_eq!(v["duo"]["n"][4]["usernames"]["x"], 1);
        let v: serde_json::Value = serde_json::from_str(&text(doc, "dave")).unwrap();
        assert_eq!(v["usernames"], serde_json::json!({}));
        // The line numbers stay the file's.
        assert_eq!(text(doc, "dave").lines().count(), doc.lines().count());
    }

    #[test]
    fn escaped_keys_and_values() {
        let doc = r#"{"user\u006eames": {"b\"ob": "x\"y\\", "al\u0069ce": "A\u0041\n", "é": "E"}}"#;
        let v: serde_json::Value = serde_json::from_str(&text(doc, "alice")).unwrap();
        assert_eq!(v, serde_json::json!({"usernames": {"alice": "AA\n"}}));
        let v: serde_json::Value = serde_json::from_str(&text(doc, "é")).unwrap();
        assert_eq!(v, serde_json::json!({"usernames": {"é": "E"}}));
        let v: serde_json::Value = serde_json::from_str(&text(doc, "b\"ob")).unwrap();
        assert_eq!(v, serde_json::json!({"usernames": {"b\"ob": "x\"y\\"}}));
    }

    #[test]
    fn duplicates_are_kept_for_serde_to_refuse() {
        let t = text(r#"{"usernames": {"a": "1", "b": "2", "a": "3"}}"#, "a");
        assert_eq!(t, r#"{"usernames": {"a":"1","a":"3"}}"#);
        let t = text(r#"{"usernames": {}, "usernames": {"a": "1"}}"#, "a");
        assert_eq!(t, r#"{"usernames": {}, "usernames": {"a":"1"}}"#);
    }

    #[test]
    fn the_users_value_is_copied_whatever_it_is() {
        let t = text(r#"{"usernames": {"a": {"x": [1]}, "b": "2"}}"#, "a");
        assert_eq!(t, r#"{"usernames": {"a":{"x": [1]}}}"#);
    }

    #[test]
    fn across_buffer_boundaries() {
        let mut doc = String::from("{\"duo\": {\"ikey\": \"I\"}, \"usernames\": {");
        for i in 0..5000 {
            doc.push_str(&format!(
                "\"user{i}\": \"$2y$04$h\\\"{}\",\n",
                "x".repeat(i % 97)
            ));
        }
        doc.push_str("\"alice\": \"A\"}, \"cache\": {\"path\": \"");
        doc.push_str(&"p".repeat(3 * BUF));
        doc.push_str("\"}}");
        for (user, value) in [
            ("user0", "$2y$04$h\"".to_string()),
            ("user4999", format!("$2y$04$h\"{}", "x".repeat(4999 % 97))),
            ("alice", "A".into()),
        ] {
            match reduce(doc.as_bytes(), user, 1 << 24, u64::MAX).unwrap() {
                Reduced::Text { text, users } => {
                    assert_eq!(users, 5001);
                    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
                    assert_eq!(v["usernames"], serde_json::json!({ user: value }));
                    assert_eq!(v["cache"]["path"].as_str().unwrap().len(), 3 * BUF);
                    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 5000);
                }
                Reduced::Unsure => panic!("unsure"),
            }
        }
        assert!(matches!(
            reduce(doc.as_bytes(), "a", 100_000, u64::MAX),
            Err(Error::TooLarge)
        ));
    }

    #[test]
    fn the_tight_loop_leaves_what_it_does_not_take_to_the_byte_by_byte_path() {
        // Other users' entries in every shape the tight loop has to look at twice: the result is
        // the same text, with the file's newlines.
        for doc in [
            "{\"usernames\": {\"b\": \"B\",  \"c\" : \"C\" ,\"alice\":\"A\", \"d\":\"D\"}}",
            "{\"usernames\": {\n\"b\"\n:\n\"B\"\n,\n\"alice\": \"A\",\t\"d\":\r\n\"D\"\n}\n}",
            "{\"usernames\": {\"b\": \"B\\\"\", \"c\\u0063\": \"C\", \"alice\": \"A\", \"e\": \"E\"}}",
            "{\"usernames\": {\"alice\": \"A\", \"b\": \"B\"}, \"x\": \"}\"}",
        ] {
            let t = text(doc, "alice");
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["usernames"], serde_json::json!({"alice": "A"}), "{doc}");
            assert_eq!(t.matches('\n').count(), doc.matches('\n').count(), "{doc}");
        }
        // What is not JSON, or not a user's entry, between the quotes: refused, never stepped over.
        for doc in [
            r#"{"usernames": {"b": "B" x, "alice": "A"}}"#,
            r#"{"usernames": {"b":: "B", "alice": "A"}}"#,
            r#"{"usernames": {"b": "B",, "alice": "A"}}"#,
            r#"{"usernames": {"b" "B", "alice": "A"}}"#,
            r#"{"usernames": {"b" x "B", "alice": "A"}}"#,
            r#"{"usernames": {"b" , "B", "alice": "A"}}"#,
            r#"{"usernames": {"b": "B", "c": "C" "alice": "A"}}"#,
            r#"{"usernames": {"b": "B", x"c": "C", "alice": "A"}}"#,
            r#"{"usernames": {"b": "B", "c": ["C"], "alice": "A"}}"#,
        ] {
            assert_eq!(
                reduce(doc.as_bytes(), "alice", 1 << 20, u64::MAX).unwrap(),
                Reduced::Unsure,
                "{doc}"
            );
        }
    }

    #[test]
    fn what_it_does_not_follow_is_left_to_the_full_parse() {
        for doc in [
            "",
            "[]",
            "{",
            r#"{"usernames": {"bob": 1, "alice": "A"}}"#,
            r#"{"usernames": {"bob": "B" "alice": "A"}}"#,
            r#"{"usernames": {"bob": "B", }}"#,
            r#"{"usernames": {"bob": "B\q"}}"#,
            r#"{"usernames": {"bob": "B\u12"}}"#,
            r#"{"usernames": {"bob": "B"#,
            r#"{"a" 1}"#,
        ] {
            assert_eq!(
                reduce(doc.as_bytes(), "alice", 1 << 20, u64::MAX).unwrap(),
                Reduced::Unsure,
                "{doc}"
            );
        }
        let deep = format!(
            "{{\"a\": {}{}}}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            reduce(deep.as_bytes(), "alice", 1 << 20, u64::MAX).unwrap(),
            Reduced::Unsure
        );
        // What serde refuses anyway is copied for serde to refuse, with its line number.
        let t = text("{\"usernames\": {}}\n x", "alice");
        assert!(serde_json::from_str::<serde_json::Value>(&t).is_err());
        let t = text(r#"{"usernames": "alice"}"#, "alice");
        assert_eq!(t, r#"{"usernames": "alice"}"#);
    }
}
