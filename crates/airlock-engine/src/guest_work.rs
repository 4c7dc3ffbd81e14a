//! A microVM sandbox's clone workspace on its way back: the guest's git writes the sandbox
//! branch as a bundle over the channel (`airlock_sandbox::microvm` capture, bounded), and
//! `airlock_work::pull` receives it into the sandbox's `pulled.git`, which the review
//! repository reads (same gate, same fetch as a container's clone).
//!
//! When: before every diff/fetch/sync of a running microVM sandbox ([`pull`]), and in the
//! engine's stop ([`before_stop`]), the one path every stop takes (CLI, HTTP, MCP, agent mode),
//! before the supervisor is signalled — so the last work is there to review while it is down.
//! A VM that ends any other way (a killed supervisor, a guest that died) leaves the
//! supervisor's [`WORK_PENDING_FILE`] behind: diff/fetch/sync then refuse with
//! `ReviewError::InGuest` (start it, and the running guest is pulled again) rather than show
//! older work as if it were the last.

use airlock_model::plan::microvm::WORK_PENDING_FILE;
use airlock_sandbox::isolation::Observed;
use airlock_sandbox::microvm::{control::VM_CONTROL, MicroVm};
use airlock_work::clone::CloneInfo;
use airlock_work::pull;
use airlock_work::review::ReviewError;
use std::path::Path;
use std::time::Duration;

/// Bring the guest's branch over if `dir` is a running microVM sandbox with a clone
/// workspace. Ok(false): nothing to do (another backend, no clone, not running).
pub fn pull(dir: &Path, name: &str) -> Result<bool, ReviewError> {
    let Some(info) = CloneInfo::load(dir) else {
        return Ok(false);
    };
    if !dir.join(VM_CONTROL).exists() {
        return Ok(false);
    }
    let vm = MicroVm::default();
    if !matches!(vm.observe_in(dir), Observed::Running { .. }) {
        return Ok(false);
    }
    let tmp = dir.join(pull::BUNDLE_TMP);
    let _ = std::fs::remove_file(&tmp);
    let got = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| ReviewError::Io(format!("{}: {e}", tmp.display())))?;
        let limit = pull::bundle_max();
        let (code, err) = vm
            .capture_in(dir, name, pull::guest_argv(&info), &mut f, limit)
            .map_err(|e| {
                ReviewError::Repo(format!("taking the work out of the guest failed: {e}"))
            })?;
        drop(f);
        match code {
            0 => pull::receive(dir, Some(&tmp)),
            pull::NOTHING_NEW => pull::receive(dir, None),
            pull::NO_BRANCH => Err(ReviewError::NoBranch(info.branch.clone())),
            _ => Err(ReviewError::Repo(format!(
                "the guest's git could not bundle {} (exit {code}): {}",
                info.branch,
                String::from_utf8_lossy(&err).trim()
            ))),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    got.map(|()| true)
}

/// What a stop did with a microVM's clone work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStop {
    /// Not a running microVM sandbox with a clone workspace.
    Nothing,
    /// The guest's branch, as the guest's work left it, is the host's to review.
    Taken,
    /// The branch moved in the guest after it was taken (something the quiet-down did not
    /// end committed): the newer work stays on the VM's disk, marked, for the next start.
    Changed { taken: String, guest: String },
}

/// The quiet-down before a stop's pull (as the sandbox user, in the guest): SIGTERM to every
/// other process it may signal, up to $1 tenths of a second for them to end, then SIGKILL
/// and up to 2 s for them to go. "Others" are the processes in /proc with an executable
/// (kernel threads have none) other than PID 1 and this shell; only builtins run while it
/// looks, so it never counts a helper of its own.
const QUIET_DOWN: &str = r#"others() {
  for p in /proc/[0-9]*; do
    case "${p#/proc/}" in 1|"$$") continue ;; esac
    [ -e "$p/exe" ] && return 0
  done
  return 1
}
kill -TERM -1 2>/dev/null
n=0
while others && [ "$n" -lt "$1" ]; do sleep 0.1; n=$((n + 1)); done
kill -KILL -1 2>/dev/null
n=0
while others && [ "$n" -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
exit 0"#;

/// The guest flushes its disk and says where the branch is now.
const SYNC_AND_TIP: &str = r#"sync; git rev-parse --verify -q "refs/heads/$1^{commit}"; exit 0"#;

/// How long the guest's commands get between SIGTERM and SIGKILL out of a stop's `grace`:
/// the share the guest's own power-off gives them (the rest is for the pull and the VM's end).
pub fn quiet_grace(grace: Duration) -> Duration {
    grace - (grace / 2).min(Duration::from_secs(3))
}

/// Before a microVM sandbox with a clone workspace stops: its commands end first (SIGTERM,
/// then after `quiet_grace(grace)` SIGKILL — what the guest's power-off would do, done before
/// the pull so that the pull takes the work as they left it, a commit made on SIGTERM
/// included); then its branch over to the host and its disk flushed (`sync` in the guest);
/// then the disk is no longer marked as holding work the host lacks — unless the branch moved
/// after it was taken ([`AtStop::Changed`]: it stays marked).
pub fn before_stop(dir: &Path, name: &str, grace: Duration) -> Result<AtStop, ReviewError> {
    if CloneInfo::load(dir).is_none()
        || !dir.join(VM_CONTROL).exists()
        || !matches!(MicroVm::default().observe_in(dir), Observed::Running { .. })
    {
        return Ok(AtStop::Nothing);
    }
    let vm = MicroVm::default();
    let tenths = (quiet_grace(grace).as_millis() / 100).to_string();
    let argv = |script: &str, arg: &str| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "airlock-stop".to_string(),
            arg.to_string(),
        ]
    };
    vm.capture_in(
        dir,
        name,
        argv(QUIET_DOWN, &tenths),
        &mut std::io::sink(),
        1 << 16,
    )
    .map_err(|e| ReviewError::Repo(format!("ending the guest's commands failed: {e}")))?;
    if !pull(dir, name)? {
        return Ok(AtStop::Nothing);
    }
    let branch = CloneInfo::load(dir).map(|i| i.branch).unwrap_or_default();
    let mut tip = Vec::new();
    vm.capture_in(dir, name, argv(SYNC_AND_TIP, &branch), &mut tip, 1 << 16)
        .map_err(|e| ReviewError::Repo(format!("flushing the guest's disk failed: {e}")))?;
    let guest = String::from_utf8_lossy(&tip).trim().to_string();
    let taken = pull::taken_tip(dir).unwrap_or_default();
    if guest != taken {
        return Ok(AtStop::Changed { taken, guest });
    }
    let _ = std::fs::remove_file(dir.join(WORK_PENDING_FILE));
    Ok(AtStop::Taken)
}

/// [`pull`], and when it had nothing to pull from: refused if the sandbox's guest disk holds
/// work the host never took out (see the module documentation).
pub fn pull_or_refuse(dir: &Path, name: &str) -> Result<(), ReviewError> {
    if pull(dir, name)? {
        return Ok(());
    }
    if stranded(dir) {
        return Err(ReviewError::InGuest(name.to_owned()));
    }
    Ok(())
}

/// The folder's VM is down and its disk holds work no stop brought over.
pub fn stranded(dir: &Path) -> bool {
    dir.join(WORK_PENDING_FILE).exists()
        && CloneInfo::load(dir).is_some()
        && !matches!(MicroVm::default().observe_in(dir), Observed::Running { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The quiet-down script in a pid namespace of its own (it plays the guest: everything in
    /// it but its PID 1 is the sandbox's), with a command that ends on SIGTERM and one that
    /// ignores it: the first ends at once, the second is killed once the grace is over, and
    /// the script returns as soon as nobody is left. Needs root (a pid namespace).
    #[test]
    fn the_quiet_down_ends_every_other_process_term_first_then_kill() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root for a pid namespace of its own; not run");
            return;
        }
        // Refuses to run anywhere but as PID 1 of the new namespace: `kill -1` must never
        // reach the host's processes.
        let outer = r#"[ "$$" = 1 ] || exit 99
sleep 600 & polite=$!
if [ "$1" = stubborn ]; then (trap '' TERM; while :; do sleep 0.05; done) & fi
stubborn=$!
sleep 0.3
t0=$(date +%s%N)
sh -c "$QUIET" q 10
t1=$(date +%s%N)
wait "$polite"; echo "polite=$?"
[ "$1" = stubborn ] && { wait "$stubborn"; echo "stubborn=$?"; }
echo "ms=$(( (t1 - t0) / 1000000 ))""#;
        for case in ["polite", "stubborn"] {
            let out = Command::new("unshare")
                .args([
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "sh",
                    "-c",
                    outer,
                    "outer",
                ])
                .arg(case)
                .env("QUIET", QUIET_DOWN)
                .output()
                .expect("unshare");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{case}: {:?} {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let ms: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("ms="))
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("{case}: {text}"));
            assert!(text.contains("polite=143"), "{case}: {text}");
            if case == "stubborn" {
                assert!(text.contains("stubborn=137"), "{case}: {text}");
                assert!((1000..5000).contains(&ms), "{case}: {ms} ms");
            } else {
                assert!(ms < 900, "{case}: waited {ms} ms with nobody left");
            }
        }
    }
}
