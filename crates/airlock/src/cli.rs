//! Command-line definitions (clap). Implementations live in `cmd/`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "Run AI coding agents and untrusted commands in disposable, network-restricted sandboxes."
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes.
#[derive(Debug, Args)]
pub struct Globals {
    /// Use this user config file instead of ~/.config/airlock/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ignore the user config file.
    #[arg(long, global = true)]
    pub no_user_config: bool,
    /// Do not run the configuration's [hooks] (pre_up, post_up, pre_down, post_down).
    #[arg(long, global = true)]
    pub no_hooks: bool,
}

/// `run`'s one-line description (the whole tree's and [`RunCli`]'s).
const RUN_ABOUT: &str =
    "Run a command in a fresh, isolated sandbox, stream its output, and clean up.";

/// `airlock run …` parsed with `run`'s arguments only: the whole tree builds every
/// subcommand's arguments (a few hundred) for any command line, which a warm `run` pays on
/// every start. The same names, usage, help and errors as [`Cli`]'s `run`.
#[derive(Debug, Parser)]
#[command(name = "airlock", version)]
pub struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    #[command(about = RUN_ABOUT)]
    Run(Box<RunArgs>),
}

impl From<RunCli> for Cli {
    fn from(c: RunCli) -> Cli {
        let RunOnly::Run(a) = c.command;
        Cli {
            globals: c.globals,
            command: Command::Run(a),
        }
    }
}

impl Cli {
    /// This process's command line: `run` through [`RunCli`] when it is the first argument
    /// (global options before it take the whole tree), anything else through the whole tree.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
            RunCli::try_parse().map(Cli::from)
        } else {
            Cli::try_parse()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(about = RUN_ABOUT)]
    Run(Box<RunArgs>),
    /// Check what this host supports (namespaces, cgroups, seccomp, Landlock, KVM, …).
    Doctor(JsonArg),
    /// Print the resolved configuration and where each value came from.
    Config(JsonArg),
    /// Write a commented starter airlock.toml in the current directory.
    Init(InitArgs),
    /// Trust the project's airlock.toml as it is now: its settings that widen the policy (and
    /// its hooks) apply only once trusted; a changed file needs trusting again.
    Trust(TrustArgs),
    /// Reclaim leftovers of sandboxes whose airlock process died.
    Gc(JsonArg),
    /// OCI images: pull, list, inspect, import, remove, prune.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create a named, persistent sandbox of the current directory (same options as run).
    Create(Box<CreateArgs>),
    /// Start a created or stopped sandbox.
    Start(NameArg),
    /// Create-or-start (NAME defaults to the project directory's name); --fresh discards its state.
    Up(Box<UpArgs>),
    /// A sandbox's supervisor log (--net: its network audit journal).
    Logs(LogsArgs),
    /// A sandbox's audit journal (all sandboxes without NAME): egress decisions and secret
    /// injections, lifecycle, review-gate outcomes and accepts, oldest first.
    Audit(AuditArgs),
    /// Stop a running sandbox (SIGTERM to everything inside, SIGKILL after the grace period).
    Stop(StopArgs),
    /// Remove a sandbox and everything it kept.
    #[command(visible_aliases = ["down", "destroy", "remove"])]
    Rm(RmArgs),
    /// List sandboxes.
    #[command(visible_alias = "ls")]
    List(JsonArg),
    /// Show a sandbox's state, policy and live resource use; without NAME, first this host's
    /// `environment:` (doctor's key checks; non-zero exit when something needed is missing).
    Status(StatusArgs),
    /// Run a command in a running sandbox.
    Exec(ExecArgs),
    /// Copy files in or out of a running sandbox: `cp HOST NAME:/path` or `cp NAME:/path HOST`.
    Cp(CpArgs),
    /// Bind a host path into a running sandbox, now, without a restart (kept across restarts):
    /// `mount NAME HOST[:DEST] [--rw]` (DEST under /workspace, /tmp or the home directory).
    Mount(MountArgs),
    /// Take a bind mount away from a running sandbox (and from its later starts).
    Unmount(UnmountArgs),
    /// Allow a domain in a filtered sandbox's egress allowlist: at once while it runs (no
    /// restart), and at its later starts: `allow NAME DOMAIN[:PORT]` (`*.example.com`: its
    /// subdomains).
    Allow(AllowArgs),
    /// Take a domain out of a filtered sandbox's egress allowlist: new connections and DNS
    /// answers for it are refused at once, open connections to it are closed.
    Deny(DenyArgs),
    /// What a clone-mode sandbox's branch changes, against where it started.
    Diff(DiffArgs),
    /// Bring branch airlock/NAME into the host repository (review-gated; objects only).
    Fetch(FetchArgs),
    /// Apply the branch's committed changes to the host checkout (fetches first).
    Sync(SyncArgs),
    /// Push a host branch into the sandbox's repository as delivered/BRANCH.
    Deliver(DeliverArgs),
    /// An interactive shell in a running sandbox.
    #[command(visible_aliases = ["ssh"])]
    Shell(NameArg),
    /// Agent mode: send the next prompt; streams the turn's reports until done or blocked
    /// (exit 0 done, 3 blocked, 4 ended without a report).
    Prompt(PromptArgs),
    /// Agent mode: the report journal (prompts, reports, blocked events, turn ends).
    Reports(ReportsArgs),
    /// Agent mode: follow the agent's live session (its output and reports); a shell (PTY) for
    /// other sandboxes or with --shell.
    Attach(AttachArgs),
    /// Serve the Model Context Protocol on stdio: sandboxes and sandboxed agents as tools
    /// (`airlock mcp server` is the same).
    Mcp(McpArgs),
    /// Print a shell completion script: `airlock completions bash > /etc/bash_completion.d/airlock`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `airlock man | man -l -`; --dir DIR writes one page per command.
    Man(ManArgs),
    /// The warm pool: pre-started sandboxes that `run` and named starts (`start`, `up`, agent
    /// starts) claim and bind their own workspace, environment and secrets to (start, stop,
    /// status, prewarm).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The local engine (auto-started by the commands that need it).
    #[command(hide = true)]
    Engine(EngineArgs),
    /// Internal: the warm pool daemon itself (`airlock daemon start` starts it detached).
    #[command(name = "__daemon", hide = true)]
    DaemonServe,
    /// Internal: supervise a persistent sandbox whose folder is DIR until it is stopped (SIGTERM).
    #[command(name = "__supervise", hide = true)]
    Supervise(Box<SuperviseArgs>),
    /// Internal: carry out one action (JSON on stdin), answer one JSON line on stdout.
    #[command(name = "__action", hide = true)]
    Action,
    /// Internal: `run` a request given as JSON on stdin (the typed child's `run`).
    #[command(name = "__run", hide = true)]
    RunJson,
    /// Internal: run a command in the running persistent sandbox whose folder is DIR.
    #[command(name = "__exec", hide = true)]
    ExecDir(ExecDirArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from its registry (or a configured mirror) into the local store.
    Pull(ImageRefArgs),
    /// List the images in the store.
    #[command(visible_alias = "list")]
    Ls(JsonArg),
    /// Remove an image from the store (its layers go at the next `image prune`).
    Rm(ImageRefArgs),
    /// Show an image's digest, layers and run configuration.
    Inspect(ImageRefArgs),
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import(ImageImportArgs),
    /// Remove layers no image uses and leftovers of interrupted pulls.
    Prune(JsonArg),
}

#[derive(Debug, Args)]
pub struct ImageRefArgs {
    /// Image reference: NAME[:TAG][@sha256:DIGEST] (`python:3.12` is docker.io/library/python:3.12).
    pub reference: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// An OCI image layout directory, a tar of one, or a `docker save` tar.
    pub file: std::path::PathBuf,
    /// Name the image (default: the name the archive carries).
    #[arg(long, value_name = "REF")]
    pub tag: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing airlock.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy defaults: restrictive (no network, no write-back), moderate (default), permissive.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// What an agent expects, in one switch: claude, codex, gemini (its profile, its API's
    /// domains, the common package registries, its workspace mode) or native. Other options
    /// and the configuration files still override each setting.
    #[arg(long, value_name = "MODE")]
    pub compatibility_mode: Option<String>,
    /// Network egress: off (loopback only) or filtered (allowlisted domains only; the default).
    #[arg(long, value_name = "MODE")]
    pub net: Option<String>,
    /// Isolation backend: container (the default) or microvm (a guest kernel under QEMU).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// The microVM backend's guest kernel: a bzImage or vmlinux whose modules are in
    /// /lib/modules (default: AIRLOCK_KERNEL, [sandbox] kernel, else /boot's newest).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The same as `--net off`.
    #[arg(long, conflicts_with = "net")]
    pub no_network: bool,
    /// Allow a domain in filtered mode: DOMAIN[:PORT] (`*.example.com` for its subdomains).
    #[arg(long = "allow", value_name = "DOMAIN[:PORT]")]
    pub allow: Vec<String>,
    /// How the current directory appears at /workspace: overlay (copy-on-write), bind, none.
    #[arg(long, value_name = "MODE")]
    pub workspace: Option<String>,
    /// Bind a host path read-only: HOST[:DEST] (DEST defaults to HOST).
    #[arg(long = "ro", value_name = "HOST[:DEST]")]
    pub ro: Vec<String>,
    /// Bind a host path writable: HOST[:DEST]. Writes reach the host.
    #[arg(long = "rw", value_name = "HOST[:DEST]")]
    pub rw: Vec<String>,
    /// Set an environment variable inside (K=V), or pass the host's value of K.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Pass the host's value of this variable (error if unset).
    #[arg(long = "env-pass", value_name = "NAME")]
    pub env_pass: Vec<String>,
    /// A secret: NAME=env:HOST_VAR or NAME=file:PATH. Read at start, given as $NAME and
    /// /run/secrets/NAME (0400, tmpfs); never written to disk, never in argv or logs. With
    /// `;hosts=H[,H];header=X` (or `;bearer`, `;basic`, `;query=P`) the sandbox holds a
    /// placeholder and the value is put into requests to those hosts only (filtered network).
    #[arg(
        long = "secret",
        value_name = "NAME=env:VAR|file:PATH[;hosts=…;header=…]"
    )]
    pub secret: Vec<String>,
    /// Memory limit, e.g. 512M, 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 2 or 0.5.
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// What the sandbox can write, e.g. 256M, 4G (`[resources] disk`): the budget of a
    /// container run's tmpfs mounts; a microVM's writable-layer disk (runs and named sandboxes).
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Maximum number of processes/threads.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Refuse to run when a requested limit cannot be enforced on this host.
    #[arg(long)]
    pub require_limits: bool,
    /// User inside: agent (uid 1000) or root (still unprivileged on the host). Default: an
    /// image's own non-root User, else agent.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Hostname inside (default: the sandbox name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Root filesystem: `host` (default), an OCI image (`python:3.12-alpine`, pulled when
    /// missing), or `auto` (picked from the command and the project's files).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Keep the sandbox afterwards as a named one (stopped, with its changes).
    #[arg(long)]
    pub keep: bool,
    /// Name of the sandbox (default: run-<random>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Working directory inside (relative paths are under /workspace).
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Kill the command after this long, e.g. 30s, 5m (exit code 124).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Give the command a pseudo-terminal (window size, colors, Ctrl-C).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Append the network audit journal (JSON lines: every allowed and denied connection and
    /// DNS answer) to this file.
    #[arg(long, value_name = "FILE")]
    pub net_log: Option<PathBuf>,
    /// Forward stdin even when it is a terminal.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The sandbox's folder (created if missing); holds spec.json unless --name is given.
    #[arg(long)]
    pub dir: PathBuf,
    /// Build the spec from these flags and the current directory instead of DIR/spec.json.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[arg(long, value_name = "FILE")]
    pub net_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecDirArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub opts: ExecOptions,
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// Agent mode: the harness that runs prompts (claude, codex, gemini; `[agent] harness` in
    /// airlock.toml also takes `{ command = [...] }`).
    #[arg(long, value_name = "HARNESS")]
    pub agent: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct PromptArgs {
    pub name: String,
    /// The directive (the next turn of the agent's conversation).
    pub text: String,
    /// Return once the prompt is queued (prints the turn id).
    #[arg(long)]
    pub no_wait: bool,
    /// Print the journal lines (JSON) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportsArgs {
    pub name: String,
    /// Keep printing as the journal grows.
    #[arg(short, long)]
    pub follow: bool,
    /// The raw journal lines (NDJSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub name: String,
    /// A shell with a PTY instead of following the agent.
    #[arg(long)]
    pub shell: bool,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The project directory (default: the current one; its airlock.toml is found upward).
    pub dir: Option<std::path::PathBuf>,
    /// Withdraw the trust instead.
    #[arg(long)]
    pub revoke: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub name: String,
    /// How long processes get to exit after SIGTERM, e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// Sync the branch into the host checkout first (as `airlock sync`); no stop if it refuses.
    #[arg(long)]
    pub sync: bool,
    /// With --sync: proceed even though the review gate flagged changes (after reviewing them).
    #[arg(long, requires = "sync")]
    pub accept: bool,
    /// With --sync: also copy build outputs back (as `airlock sync --artifacts`).
    #[arg(long, requires = "sync")]
    pub artifacts: bool,
    /// Remove it once stopped (as `airlock rm`).
    #[arg(long, visible_alias = "rm")]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub name: String,
    /// Only the changed files and line counts.
    #[arg(long)]
    pub stat: bool,
    /// Machine-readable: the files, their line counts and the review gate's findings.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    pub name: String,
    /// Fetch even though the review gate flagged changes (after reviewing them).
    #[arg(long)]
    pub accept: bool,
    /// Replace the host's airlock/NAME even when it has commits the sandbox branch lacks.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    pub name: String,
    /// Show what would change in the host checkout, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also copy build outputs (dist/ build/ target/ .next/ out/) from the sandbox.
    #[arg(long)]
    pub artifacts: bool,
    /// Proceed even though the review gate flagged changes.
    #[arg(long)]
    pub accept: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    pub name: String,
    /// A branch of the host repository.
    pub branch: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: String,
    /// Stop it first if it is running.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Default: the sandbox named after the current directory (as `up` names it).
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: ExecOptions,
    pub name: String,
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// The options of `exec` (and of the internal `__exec`).
#[derive(Debug, Args)]
pub struct ExecOptions {
    /// Give the command a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Forward stdin even when it is a terminal.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Set an environment variable (K=V), or pass the host's value of K.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Give the command the sandbox's secrets as environment variables (not inherited
    /// otherwise; they are always readable as /run/secrets/NAME inside).
    #[arg(long)]
    pub secrets: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon (if it is not running) with a pool of sandboxes made from these options
    /// (as `run` would make them, so that `airlock run -- CMD` with the same options claims
    /// one: an overlay pool unless `--workspace` or the configuration says `none`; an overlay
    /// pool serves runs with an overlay or bind workspace, and named sandboxes (`start`, `up`,
    /// agent starts) with a clone or bind one, attached at claim; for `--backend microvm`,
    /// `--workspace clone` keeps guests for named sandboxes' clone workspaces) and keep it full.
    /// `[daemon.agents.NAME] min_warm = N` keeps a pool for an agent's starts.
    Start(Box<PoolArgs>),
    /// Remove every member nobody claimed, forget the pools, and stop the daemon.
    Stop(JsonArg),
    /// Whether the daemon runs; per pool: size, members ready, hits, misses, claim latency,
    /// and the agent a `[daemon.agents.NAME] min_warm` pool serves.
    Status(JsonArg),
    /// Add a pool (or resize one: --pool KEY) and fill it; starts the daemon if needed.
    Prewarm(Box<PoolArgs>),
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Members to keep ready (default: [pool] size in the configuration, else 2).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// The pool to resize (a key from `daemon status`, or its first 8 characters).
    #[arg(long, value_name = "KEY")]
    pub pool: Option<String>,
    /// Return only once every pool is full.
    #[arg(long)]
    pub wait: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    #[command(subcommand)]
    pub action: EngineAction,
}

#[derive(Debug, Subcommand)]
pub enum EngineAction {
    /// Serve the API on the engine socket (what the CLI auto-starts).
    Serve,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    pub name: Option<String>,
    /// Remove the sandbox (and its kept state) first.
    #[arg(long)]
    pub fresh: bool,
    /// Agent mode: the harness that runs prompts (claude, codex, gemini).
    #[arg(long, value_name = "HARNESS")]
    pub agent: Option<String>,
    /// Agent mode: the first prompt; its reports stream until done or blocked.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// With --prompt: return once the prompt is queued.
    #[arg(long)]
    pub no_attach: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing as the log grows.
    #[arg(short, long)]
    pub follow: bool,
    /// The network audit journal (JSON lines) instead of the supervisor log.
    #[arg(long)]
    pub net: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    pub name: Option<String>,
    /// Keep printing new events.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub name: String,
    /// The host path, and where it appears inside (default: the same path).
    #[arg(value_name = "HOST[:DEST]")]
    pub spec: String,
    /// Writable (writes reach the host); read-only otherwise. Refused by the restrictive profile.
    #[arg(long)]
    pub rw: bool,
}

#[derive(Debug, Args)]
pub struct AllowArgs {
    pub name: String,
    /// A host name (`*.example.com` for its subdomains), and a port to allow too.
    #[arg(value_name = "DOMAIN[:PORT]")]
    pub domain: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Internal: the surface asking, for the audit journal (`mcp` from the MCP server).
    #[arg(long, hide = true, value_parser = ["cli", "mcp", "api"], default_value = "cli")]
    pub via: String,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    pub name: String,
    /// An entry of its allowlist (`github.com`, `*.example.com`).
    pub domain: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Internal: the surface asking, for the audit journal (`mcp` from the MCP server).
    #[arg(long, hide = true, value_parser = ["cli", "mcp", "api"], default_value = "cli")]
    pub via: String,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    pub name: String,
    /// Where it appears inside.
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    pub src: String,
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Let tool calls ask for the permissive profile or a writable workspace bind (writes reach
    /// this project directory; the server's environment is passed through).
    #[arg(long, global = true)]
    pub allow_permissive: bool,
    #[command(subcommand)]
    pub action: Option<McpAction>,
}

#[derive(Debug, Subcommand)]
pub enum McpAction {
    /// The same as `airlock mcp`: serve on stdio.
    Server,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write airlock.1 and one page per command (airlock-run.1, …) into this directory instead
    /// of printing airlock.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Cli {
    /// Spellings that are aliases of other options, resolved once after parsing so the rest of
    /// the code sees one form: `--no-network` is `--net off`.
    pub fn normalize(mut self) -> Self {
        let policy = match &mut self.command {
            Command::Run(a) => Some(&mut a.policy),
            Command::Create(a) => Some(&mut a.policy),
            Command::Up(a) => Some(&mut a.policy),
            Command::Supervise(a) => Some(&mut a.policy),
            Command::Daemon(DaemonCommand::Start(a) | DaemonCommand::Prewarm(a)) => {
                Some(&mut a.policy)
            }
            _ => None,
        };
        if let Some(p) = policy {
            p.normalize();
        }
        self
    }
}

impl PolicyArgs {
    fn normalize(&mut self) {
        if std::mem::take(&mut self.no_network) {
            self.net = Some("off".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run`'s own parser is the whole tree's `run`: the same parse, help, usage and errors.
    #[test]
    fn runs_own_parser_is_the_whole_trees_run() {
        let shown = |r: Result<Cli, clap::Error>| {
            r.map(|c| format!("{c:?}"))
                .map_err(|e| (e.kind(), e.render().to_string()))
        };
        for args in [
            &["airlock", "run", "--help"][..],
            &["airlock", "run", "-h"],
            &["airlock", "run"],
            &["airlock", "run", "--version"],
            &["airlock", "run", "--bogus", "--", "true"],
            &["airlock", "run", "--workspace", "nope", "--", "true"],
            &[
                "airlock",
                "run",
                "--workspace",
                "none",
                "--net",
                "off",
                "--",
                "true",
            ],
            &[
                "airlock",
                "run",
                "--config",
                "/c.toml",
                "--no-hooks",
                "--",
                "true",
            ],
            &[
                "airlock",
                "run",
                "--no-network",
                "-e",
                "A=1",
                "--",
                "sh",
                "-c",
                "x",
            ],
            &["airlock", "run", "true", "--net", "off"],
        ] {
            let full = shown(Cli::try_parse_from(args));
            assert_eq!(
                full,
                shown(RunCli::try_parse_from(args).map(Cli::from)),
                "{args:?}"
            );
            // Not vacuous: each case either parsed or said something.
            assert!(full
                .as_ref()
                .map_or_else(|e| !e.1.is_empty(), |c| c.contains("Run(")));
        }
    }
}
