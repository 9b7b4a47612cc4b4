//! The command line: the drop-in invocation mod_authnz_external uses (`check-duo -c FILE`, no
//! subcommand), and the admin subcommands, chosen only by a first positional word. The man page
//! and the shell completions are generated from these same definitions (`cargo run -p xtask --
//! assets DIR`), so `--help`, `man check-duo` and tab completion never disagree.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// How mod_authnz_external passes the credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// `user\npassword\n` on stdin (`DefineExternalAuth NAME pipe …`).
    Pipe,
    /// `USER` and `PASS` in the environment (`DefineExternalAuth NAME environment …`).
    Environment,
}

const ABOUT: &str =
    "Two-factor authenticator for Apache mod_authnz_external: password, then Duo Push";

const LONG_ABOUT: &str = "\
Two-factor authenticator for Apache mod_authnz_external: password, then Duo Push.

Without a subcommand, check-duo is the authenticator Apache runs for every protected request \
(`DefineExternalAuth duo pipe \"/usr/lib/check-duo/check-duo -c /etc/check-duo/config.json\"`, the package's setgid copy): it reads \
the user name and the password from stdin (or USER and PASS with --protocol environment), the \
client address, host, URI, context and cookie from IP, HTTP_HOST, URI, CONTEXT and COOKIE, and \
exits 0 to grant or 1 to deny, with one line on stderr (Apache's ErrorLog) saying why. No other \
environment variable changes its behaviour.

The subcommands are for administrators: check a configuration, hash a password, list and end \
cached sessions.";

const AFTER_LONG_HELP: &str = "\
Exit status (without a subcommand): 0 grants, any other value denies (1 for every decision, 2 \
for unusable arguments). Subcommands exit 0 on success and non-zero on any error.

Files: /etc/check-duo/config.json (the configuration, 0640 root:check-duo), \
/var/lib/check-duo/sessions.db (the embedded session store), \
/etc/apache2/conf-available/check-duo.conf (the Apache configuration).";

/// `check-duo`: the drop-in authenticator, or an admin subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "check-duo",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The JSON configuration file (drop-in mode).
    #[arg(
        short = 'c',
        long = "configuration-file",
        value_name = "FILE",
        required = true
    )]
    pub config: Option<PathBuf>,
    /// How mod_authnz_external passes the credentials (drop-in mode).
    #[arg(long, value_enum, default_value = "pipe")]
    pub protocol: ProtocolArg,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The admin subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration file: syntax, permissions, the session store and Duo.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print an argon2id hash of a password, for `usernames` in the configuration.
    HashPassword(HashPasswordArgs),
    /// List or end cached sessions (Duo approvals).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Run the long-running gate: the authorization endpoints for nginx, Caddy, Traefik,
    /// HAProxy and Envoy, the FastCGI authorizer for Apache, and the sign-in portal. Needs a
    /// `server` section (at least `server.portal_url`) in the configuration. Stops on SIGTERM.
    Serve(ConfigFile),
}

/// The subcommand words, for telling an admin command line from the drop-in one.
pub const SUBCOMMANDS: &[&str] = &["config", "hash-password", "sessions", "serve"];

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and prove it works: parse every key, warn about plaintext
    /// passwords and a file others can read, reach the session store (a harmless read), call
    /// Duo's `check` (proves ikey and skey) and `ping` (measures clock skew).
    ///
    /// Every problem is printed on its own line naming the key or the service. Exit status 0
    /// when there is no error (warnings allowed unless --strict), 1 otherwise.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigFile {
    /// The JSON configuration file.
    #[arg(
        short = 'c',
        long = "configuration-file",
        value_name = "FILE",
        default_value = "/etc/check-duo/config.json"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub file: ConfigFile,
    /// Treat warnings as errors (exit 1 on any warning).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct HashPasswordArgs {
    /// Read the password from the first line of stdin even when it is a terminal (it is read
    /// from stdin anyway when stdin is not a terminal).
    #[arg(long)]
    pub stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List the cached sessions: user, client address, approval time and expiry (never a key).
    List(SessionsListArgs),
    /// End cached sessions: the next request of those browsers asks Duo again.
    Revoke(SessionsRevokeArgs),
}

#[derive(Debug, Args)]
pub struct SessionsListArgs {
    #[command(flatten)]
    pub file: ConfigFile,
    /// Only this user's sessions.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "which")]
pub struct RevokeWhich {
    /// End every session of this user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// End every session.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct SessionsRevokeArgs {
    #[command(flatten)]
    pub file: ConfigFile,
    #[command(flatten)]
    pub which: RevokeWhich,
}

/// True when the command line names an admin subcommand (its first argument is one of
/// [`SUBCOMMANDS`]); the drop-in invocation never has a positional argument.
pub fn is_admin(args: &[std::ffi::OsString]) -> bool {
    args.get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| SUBCOMMANDS.contains(&a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn drop_in_forms() {
        for args in [
            &["check-duo", "-c", "/f"][..],
            &["check-duo", "--configuration-file=/f"],
            &[
                "check-duo",
                "--configuration-file",
                "/f",
                "--protocol",
                "pipe",
            ],
            &["check-duo", "-c", "/f", "--protocol=environment"],
        ] {
            let cli = parse(args).unwrap();
            assert!(cli.command.is_none(), "{args:?}");
            assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("/f")));
        }
        assert!(parse(&["check-duo"]).is_err());
        assert!(parse(&["check-duo", "-c", "/f", "--protocol", "checkpassword"]).is_err());
    }

    #[test]
    fn admin_forms() {
        let cli = parse(&["check-duo", "config", "check", "-c", "/f", "--strict"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Config(ConfigCommand::Check(ConfigCheckArgs {
                strict: true,
                ..
            })))
        ));
        let cli = parse(&["check-duo", "sessions", "revoke", "--all"]).unwrap();
        match cli.command {
            Some(Command::Sessions(SessionsCommand::Revoke(a))) => {
                assert!(a.which.all);
                assert_eq!(a.file.config, PathBuf::from("/etc/check-duo/config.json"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["check-duo", "sessions", "revoke", "-c", "/f"]).is_err());
        assert!(parse(&["check-duo", "sessions", "revoke", "--all", "--user", "x"]).is_err());
        assert!(parse(&["check-duo", "hash-password", "--stdin"]).is_ok());
        // Drop-in arguments do not mix with a subcommand.
        assert!(parse(&["check-duo", "-c", "/f", "sessions", "list"]).is_err());
    }

    #[test]
    fn admin_detection() {
        let v = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(is_admin(&v(&["check-duo", "sessions", "list"])));
        assert!(!is_admin(&v(&["check-duo", "-c", "sessions"])));
        assert!(!is_admin(&v(&["check-duo"])));
    }
}
