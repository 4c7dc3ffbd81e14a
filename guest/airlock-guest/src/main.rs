//! `airlock-guest`: the in-sandbox helper. Multi-call: invoked as `report` it is the report tool;
//! otherwise the first argument names the subcommand. One line per subcommand below.

use airlock_guest::{fs, init, report, which, ws};

const USAGE: &str = "usage: airlock-guest runner|report|which|fs|init|ws ARGS…";

fn main() {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("report")) {
        std::process::exit(report::main(&rest));
    }
    let Some((sub, args)) = rest.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let code = match sub.as_str() {
        "runner" => airlock_guest::runner_main(args),
        "report" => report::main(args),
        "which" => which::main(args),
        "fs" => fs::main(args),
        "init" => init::main(args),
        "ws" => ws::main(args),
        "-h" | "--help" => {
            println!("{USAGE}");
            0
        }
        other => {
            eprintln!("airlock-guest: unknown subcommand {other:?}\n{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
