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

/// Before a microVM sandbox with a clone workspace stops: its branch over to the host, and
/// its disk flushed (`sync` in the guest), so nothing written just before the stop is lost;
/// then the disk is no longer marked as holding work the host lacks. Ok(false): nothing to do.
pub fn before_stop(dir: &Path, name: &str) -> Result<bool, ReviewError> {
    if !pull(dir, name)? {
        return Ok(false);
    }
    let mut sink = std::io::sink();
    MicroVm::default()
        .capture_in(dir, name, vec!["sync".into()], &mut sink, 1 << 16)
        .map_err(|e| ReviewError::Repo(format!("flushing the guest's disk failed: {e}")))?;
    let _ = std::fs::remove_file(dir.join(WORK_PENDING_FILE));
    Ok(true)
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
