//! `cargo run -p xtask -- assets DIR`: write the man pages (`DIR/man/check-duo.1`, one page per
//! subcommand too) and the shell completions (`DIR/completions/{check-duo.bash,_check-duo,
//! check-duo.fish}`) generated from `check_duo::cli`, the definitions the binary parses with.
//! `scripts/package` runs it before `cargo deb`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory as _;
use clap_complete::Shell;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "assets" => match assets(Path::new(dir)) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask assets: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo run -p xtask -- assets DIR");
            ExitCode::from(2)
        }
    }
}

fn assets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).map_err(io(&man))?;
    let cmd = check_duo::cli::Cli::command();
    // check-duo.1 plus check-duo-config.1, check-duo-config-check.1, …
    clap_mangen::generate_to(cmd.clone(), &man).map_err(io(&man))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(io(&man))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    written.extend(pages);

    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions).map_err(io(&completions))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = cmd.clone();
        let path = clap_complete::generate_to(shell, &mut c, "check-duo", &completions)
            .map_err(io(&completions))?;
        written.push(path);
    }
    Ok(written)
}
