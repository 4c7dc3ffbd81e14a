//! Command implementations, one module per subcommand.

mod action;
pub(crate) mod adopt;
mod agent;
mod config;
mod cp;
pub(crate) mod daemon;
mod doctor;
mod drift;
mod exec;
mod gc;
mod hooks;
pub(crate) mod image;
mod init;
pub(crate) mod load;
mod manual;
mod mounts;
pub(crate) mod named;
mod policy;
pub(crate) mod run;
pub(crate) mod sandbox;
pub(crate) mod secrets;
mod setup;
pub(crate) mod spec;
mod supervise;
pub(crate) mod trust;
mod vm_member;
mod warm_vm;
mod wayback;
mod work;

use crate::cli::{Cli, Command};
use crate::error::{CliError, CliResult};
use airlock_model::exit;

pub fn dispatch(cli: Cli) -> CliResult<i32> {
    hooks::skip_all(cli.globals.no_hooks);
    match cli.command {
        Command::Run(a) if a.keep => sandbox::run_keep(
            *a,
            cli.globals.config.as_deref(),
            cli.globals.no_user_config,
        ),
        Command::Run(a) => run::run(
            &a,
            cli.globals.config.as_deref(),
            cli.globals.no_user_config,
        ),
        Command::Gc(a) => gc::gc(a.json),
        Command::Image(c) => {
            image::dispatch(c, cli.globals.config.as_deref(), cli.globals.no_user_config)
        }
        Command::Create(a) => sandbox::create(
            *a,
            cli.globals.config.as_deref(),
            cli.globals.no_user_config,
        ),
        Command::Start(a) => sandbox::start(&a.name),
        Command::Up(a) => sandbox::up(
            *a,
            cli.globals.config.as_deref(),
            cli.globals.no_user_config,
        ),
        Command::Logs(a) => sandbox::logs(&a),
        Command::Audit(a) => sandbox::audit(&a),
        Command::Stop(a) => sandbox::stop(&a),
        Command::Rm(a) => sandbox::rm(&a),
        Command::List(a) => sandbox::list(a.json),
        Command::Status(a) => sandbox::status(&a),
        Command::Exec(a) => exec::exec_cmd(a),
        Command::Diff(a) => work::diff(&a),
        Command::Fetch(a) => work::fetch(&a),
        Command::Sync(a) => work::sync(&a),
        Command::Deliver(a) => work::deliver(&a),
        Command::Shell(a) => exec::shell(&a.name),
        Command::Prompt(a) => agent::prompt(&a),
        Command::Reports(a) => agent::reports(&a),
        Command::Attach(a) => agent::attach(&a),
        Command::Cp(a) => cp::cp(&a.src, &a.dst),
        Command::Action => action::main(),
        Command::RunJson => action::run_main(),
        Command::Mount(a) => mounts::mount(&a),
        Command::Unmount(a) => mounts::unmount(&a),
        Command::Allow(a) => policy::allow(&a),
        Command::Deny(a) => policy::deny(&a),
        // `airlock mcp server` is `airlock mcp` (the spelling other tools use).
        Command::Mcp(a) => mcp_serve(a.allow_permissive),
        Command::Completions(a) => manual::completions(a.shell),
        Command::Man(a) => manual::man(a.dir.as_deref()),
        Command::Daemon(c) => {
            daemon::dispatch(c, cli.globals.config.as_deref(), cli.globals.no_user_config)
        }
        Command::DaemonServe => daemon::serve(),
        Command::Engine(a) => match a.action {
            crate::cli::EngineAction::Serve => supervise::engine_serve(),
        },
        Command::Supervise(a) if a.name.is_none() => supervise::supervise_spec(&a.dir),
        Command::Supervise(a) => {
            let a = *a;
            std::fs::create_dir_all(&a.dir).map_err(|e| CliError::new(exit::SANDBOX_FAILED, e))?;
            let run_args = crate::cli::RunArgs {
                policy: a.policy,
                name: a.name,
                workdir: None,
                timeout: None,
                tty: false,
                interactive: false,
                net_log: a.net_log,
                keep: false,
                cmd: vec![],
            };
            run::run_with(
                &run_args,
                cli.globals.config.as_deref(),
                cli.globals.no_user_config,
                Some(&a.dir),
            )
        }
        Command::ExecDir(a) => {
            let name = a
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let o = a.opts;
            exec::exec_dir(
                &a.dir,
                &name,
                a.cmd,
                &o.env,
                o.workdir,
                o.tty,
                o.interactive,
                o.secrets,
            )
        }
        Command::Config(a) => {
            let resolved = run::load_config(
                cli.globals.config.as_deref(),
                cli.globals.no_user_config,
                Default::default(),
            )?;
            let trusted = resolved
                .project
                .as_ref()
                .is_some_and(|p| crate::cmd::trust::state(p) == crate::cmd::trust::State::Trusted);
            config::run_config(&resolved, trusted, a.json, &mut std::io::stdout().lock())
                .map_err(|e| CliError::new(exit::USAGE, e))?;
            Ok(0)
        }
        Command::Trust(a) => crate::cmd::trust::trust_cmd(a.dir.as_deref(), a.revoke, a.json),
        Command::Init(a) => {
            let dir = std::env::current_dir().map_err(|e| CliError::new(exit::USAGE, e))?;
            let path = init::run_init(&dir, a.force)
                .map_err(|e| CliError::new(exit::USAGE, e).hint("pass --force to overwrite"))?;
            outln!("wrote {}", path.display());
            Ok(0)
        }
        Command::Doctor(a) => doctor::run_doctor(a.json, &mut std::io::stdout().lock())
            .map_err(|e| CliError::new(exit::SANDBOX_FAILED, e)),
    }
}

/// `airlock mcp`: the server (airlock-mcp) with this binary's way of turning `run` flags into a
/// spec, for `policy_explain`.
fn mcp_serve(allow_permissive: bool) -> CliResult<i32> {
    let spec_builder: airlock_mcp::SpecBuilder = std::sync::Arc::new(|options| {
        let run = crate::cli::RunArgs {
            policy: action::policy_args(options.clone(), vec![]),
            keep: false,
            name: None,
            workdir: None,
            timeout: None,
            tty: false,
            net_log: None,
            interactive: false,
            cmd: vec!["true".into()],
        };
        run::build(&run, None, false, false)
            .map(|b| b.spec)
            .map_err(|e| format!("{:#}", e.error))
    });
    airlock_mcp::serve(airlock_mcp::Options {
        allow_permissive,
        spec_builder,
    })
    .map(|()| 0)
    .map_err(|e| {
        let code = match e {
            airlock_mcp::ServeError::Init(_) => exit::USAGE,
            _ => exit::SANDBOX_FAILED,
        };
        CliError::new(code, e)
    })
}
