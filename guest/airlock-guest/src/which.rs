//! `airlock-guest which PROGRAM`: where the agent runner would find PROGRAM (its PATH, the tools
//! directory first). Prints the path (0), or says where it looked (127). No shell needed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn runnable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The subcommand's entry point; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let [program] = args else {
        eprintln!("usage: airlock-guest which PROGRAM");
        return 2;
    };
    let path = airlock_agent::path_with_tools(std::env::var("PATH").ok().as_deref());
    match find(program, &path) {
        Some(p) => {
            println!("{p}");
            0
        }
        None if program.contains('/') => {
            eprintln!("{program}: no executable file there");
            airlock_model::exit::NOT_FOUND_CMD
        }
        None => {
            eprintln!("{program} is not on PATH ({path})");
            airlock_model::exit::NOT_FOUND_CMD
        }
    }
}

/// The runnable file `program` names on `path`.
pub fn find(program: &str, path: &str) -> Option<String> {
    if program.contains('/') {
        return runnable(Path::new(program)).then(|| program.to_string());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| runnable(p))
        .map(|p| p.display().to_string())
}
