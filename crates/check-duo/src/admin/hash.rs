//! `check-duo hash-password`: an argon2id hash for `usernames` in the configuration. From a
//! terminal the password is read twice without echo; otherwise (or with `--stdin`) the first
//! line of stdin is the password.

use std::io::{BufRead as _, IsTerminal as _};

use zeroize::Zeroizing;

use crate::config::Credential;
use crate::password;

pub fn run(from_stdin: bool) -> u8 {
    match read(from_stdin).and_then(|pw| hash(&pw)) {
        Ok(h) => {
            println!("{h}");
            0
        }
        Err(e) => {
            eprintln!("check-duo hash-password: {e}");
            1
        }
    }
}

fn read(from_stdin: bool) -> Result<Zeroizing<String>, String> {
    if !from_stdin && std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("Password: ").map_err(|e| format!("terminal: {e}"))?,
        );
        let again = Zeroizing::new(
            rpassword::prompt_password("Again: ").map_err(|e| format!("terminal: {e}"))?,
        );
        if *first != *again {
            return Err("the passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("stdin: {e}"))?;
    let len = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(len);
    Ok(line)
}

/// Hash and prove the hash verifies and is accepted as a `usernames` value.
pub fn hash(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("empty password".into());
    }
    let h = password::hash_argon2id(password).map_err(|e| format!("argon2id: {e}"))?;
    if !password::verify(&Credential::Argon2id(h.clone()), password) {
        return Err("argon2id: the new hash does not verify".into());
    }
    Ok(h)
}
