//! A microVM sandbox's clone workspace lives on the guest's own disk, which the host never
//! mounts. Its work comes back as a git bundle of the sandbox branch, written by the guest's
//! git on the channel (`guest_argv`) and received here into `DIR/pulled.git`: a bare
//! repository of airlock's whose only alternate is the host-made clone (which holds the
//! bundle's prerequisite, the start commit). The bundle is hostile data: host git only indexes
//! its objects (no hooks, no config of the sandbox's, no checkout) and takes one ref from it;
//! the review repository then reads that ref as data and sees those objects as one more
//! alternate, so diff, the gate and fetch (with fsck) are exactly those of a container's clone.

pub use super::clone::PULLED_DIR;
use super::clone::{CloneInfo, WORKSPACE_DIR};
use super::git::{is_oid, Git};
use super::review::ReviewError;
use std::path::{Path, PathBuf};

/// Where the bundle is written while it arrives (in the sandbox's folder).
pub const BUNDLE_TMP: &str = ".pulled.bundle.tmp";
/// The largest bundle the host takes, unless `AIRLOCK_VM_BUNDLE_MAX` (bytes) says otherwise.
pub const DEFAULT_BUNDLE_MAX: u64 = 2 << 30;
/// The guest command's exit status when the branch has nothing beyond its start.
pub const NOTHING_NEW: i32 = 4;
/// ... and when the branch does not exist in the guest.
pub const NO_BRANCH: i32 = 3;

/// The bundle size limit in force.
pub fn bundle_max() -> u64 {
    std::env::var("AIRLOCK_VM_BUNDLE_MAX")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_BUNDLE_MAX)
}

/// What the guest runs (in /workspace, as the sandbox user): the branch since its start as a
/// bundle on stdout; exit NOTHING_NEW when the branch is still at its start, NO_BRANCH when
/// it is gone.
pub fn guest_argv(info: &CloneInfo) -> Vec<String> {
    let script = r#"tip=$(git rev-parse --verify -q "refs/heads/$1^{commit}") || exit 3
if [ -n "$2" ] && [ "$tip" = "$2" ]; then exit 4; fi
if [ -n "$2" ]; then exec git bundle create -q - "refs/heads/$1" --not "$2"; fi
exec git bundle create -q - "refs/heads/$1""#;
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "airlock-pull".into(),
        info.branch.clone(),
        info.start.clone().unwrap_or_default(),
    ]
}

/// The branch's tip as the host last took it (`DIR/pulled.git`), else the clone's start
/// (nothing new was pulled). None: neither is known.
pub fn taken_tip(dir: &Path) -> Option<String> {
    let info = CloneInfo::load(dir)?;
    let q = dir.join(PULLED_DIR);
    let refname = format!("refs/heads/{}", info.branch);
    let pulled = q
        .is_dir()
        .then(|| {
            Git::bare(&q)
                .text(&["rev-parse", "--verify", "-q", &refname])
                .ok()
        })
        .flatten()
        .map(|t| t.trim().to_string())
        .filter(|t| is_oid(t));
    pulled.or(info.start)
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ReviewError + '_ {
    move |e| ReviewError::Io(format!("{what}: {e}"))
}

/// `DIR/pulled.git`, made if missing (bare, no template, the clone's objects as alternate).
fn repo(dir: &Path) -> Result<PathBuf, ReviewError> {
    let q = dir.join(PULLED_DIR);
    if q.join("objects/info/alternates").is_file() {
        return Ok(q);
    }
    let _ = std::fs::remove_dir_all(&q);
    Git::worktree(dir).output(&[
        std::ffi::OsStr::new("init"),
        "--bare".as_ref(),
        "--quiet".as_ref(),
        "--template=".as_ref(),
        q.as_os_str(),
    ])?;
    let clone_objects = dir.join(WORKSPACE_DIR).join(".git/objects");
    let info = q.join("objects/info");
    std::fs::create_dir_all(&info)
        .and_then(|()| {
            std::fs::write(
                info.join("alternates"),
                format!("{}\n", clone_objects.display()),
            )
        })
        .map_err(io("make the repository the work comes back to"))?;
    Ok(q)
}

/// Take the guest's branch from `bundle` into `DIR/pulled.git` (None: the guest's branch is
/// at its start again, so the clone's own branch is the tip). On any failure the previous
/// state stays as it was.
pub fn receive(dir: &Path, bundle: Option<&Path>) -> Result<(), ReviewError> {
    let info = CloneInfo::load(dir).ok_or_else(|| ReviewError::NotClone(String::new()))?;
    let q = repo(dir)?;
    let git = Git::bare(&q);
    let refname = format!("refs/heads/{}", info.branch);
    let Some(bundle) = bundle else {
        let _ = git.output(&["update-ref", "-d", &refname]);
        return Ok(());
    };
    // Hostile input: only index-pack and a ref update run. Hooks off, no fsck here (the
    // review's fetch fscks, as for a container's clone), no gc, no submodules, no tags.
    let spec = format!("+{refname}:{refname}");
    git.output(&[
        std::ffi::OsStr::new("-c"),
        "core.hooksPath=/dev/null".as_ref(),
        "-c".as_ref(),
        "fetch.fsckObjects=false".as_ref(),
        "-c".as_ref(),
        "transfer.fsckObjects=false".as_ref(),
        "-c".as_ref(),
        "fetch.writeCommitGraph=false".as_ref(),
        "fetch".as_ref(),
        "--quiet".as_ref(),
        "--no-tags".as_ref(),
        "--no-write-fetch-head".as_ref(),
        "--no-auto-gc".as_ref(),
        "--no-recurse-submodules".as_ref(),
        bundle.as_os_str(),
        spec.as_ref(),
    ])
    .map_err(|e| ReviewError::Repo(format!("the sandbox's bundle was refused: {e}")))?;
    let tip = git.text(&["rev-parse", "--verify", "-q", &refname])?;
    if !is_oid(&tip) {
        return Err(ReviewError::Repo(format!("{refname} is not an object id")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Review;
    use std::process::Command;

    fn sh(cwd: &Path, script: &str) -> String {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A host repository, a sandbox folder with its clone, and a copy of that clone standing
    /// for the guest's disk.
    fn setup(tag: &str) -> (PathBuf, PathBuf, PathBuf, CloneInfo) {
        let top = std::env::temp_dir().join(format!("airlock-pull-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (host, dir, guest) = (top.join("host"), top.join("box"), top.join("guest"));
        for d in [&host, &dir] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        sh(
            &host,
            "git init -q -b main && echo one > a.txt && git add . && git commit -qm initial",
        );
        let info = crate::clone::prepare(&host, &dir, "box").expect("clone");
        sh(
            &top,
            &format!(
                "cp -a {} {}",
                dir.join(WORKSPACE_DIR).display(),
                guest.display()
            ),
        );
        (top, dir, guest, info)
    }

    fn bundle(guest: &Path, info: &CloneInfo, extra: &str) -> PathBuf {
        let b = guest.with_extension("bundle");
        let start = info.start.clone().expect("start");
        sh(
            guest,
            &format!(
                "git bundle create -q {} refs/heads/{} {extra} --not {start}",
                b.display(),
                info.branch
            ),
        );
        b
    }

    /// What a stop compares the guest's branch with: the clone's start before anything was
    /// taken, the received tip after, the start again once the branch is back at it.
    #[test]
    fn the_taken_tip_is_the_last_received_else_the_start() {
        let (top, dir, guest, info) = setup("taken");
        let start = info.start.clone().expect("start");
        assert_eq!(taken_tip(&dir).as_deref(), Some(start.as_str()));
        sh(&guest, "echo two > a.txt && git commit -qam two");
        let tip = sh(&guest, "git rev-parse HEAD");
        receive(&dir, Some(&bundle(&guest, &info, ""))).expect("receive");
        assert_eq!(taken_tip(&dir).as_deref(), Some(tip.as_str()));
        receive(&dir, None).expect("nothing new");
        assert_eq!(taken_tip(&dir).as_deref(), Some(start.as_str()));
        let _ = std::fs::remove_dir_all(&top);
    }

    #[test]
    fn the_guests_branch_is_reviewed_from_its_bundle_and_nothing_else_is_taken() {
        let (top, dir, guest, info) = setup("take");
        // The guest's work, with nested agent configuration, and refs beside its branch.
        sh(
            &guest,
            "echo two > a.txt && mkdir -p sub/.claude && echo '{}' > sub/.claude/settings.json && \
             git add -A && git commit -qm two && git tag -a v1 -m x && \
             git branch other && git config core.fsmonitor 'touch pwned'",
        );
        let tip = sh(&guest, "git rev-parse HEAD");
        let b = bundle(&guest, &info, "refs/heads/other refs/tags/v1");
        receive(&dir, Some(&b)).expect("receive");
        let q = dir.join(PULLED_DIR);
        // Only the sandbox branch; no hook, no config of the guest's.
        let refs = sh(&q, "GIT_DIR=. git for-each-ref --format='%(refname)'");
        assert_eq!(refs, format!("refs/heads/{}", info.branch));
        assert!(!std::fs::read_to_string(q.join("config"))
            .expect("config")
            .contains("fsmonitor"));
        assert!(!q.join("hooks").exists());
        let r = Review::open(&dir, "box", vec![]).expect("review");
        assert_eq!(r.tip, tip);
        assert_eq!(r.commits, 1);
        assert!(
            r.findings
                .iter()
                .any(|f| f.path == "sub/.claude/settings.json"),
            "{:?}",
            r.findings
        );
        drop(r);

        // Garbage, and a bundle without the branch: refused, the last tip stays.
        let junk = top.join("junk.bundle");
        std::fs::write(&junk, b"# v2 git bundle\nnot really\n").expect("write");
        assert!(receive(&dir, Some(&junk)).is_err());
        sh(
            &guest,
            "git checkout -q -b lone && echo x > x && git add x && git commit -qm lone",
        );
        let lone = top.join("lone.bundle");
        sh(
            &guest,
            &format!(
                "git bundle create -q {} refs/heads/lone --not {}",
                lone.display(),
                info.start.clone().expect("start")
            ),
        );
        assert!(receive(&dir, Some(&lone)).is_err());
        assert_eq!(Review::open(&dir, "box", vec![]).expect("review").tip, tip);

        // Back at its start: the clone's own branch is the tip again.
        receive(&dir, None).expect("reset");
        let r = Review::open(&dir, "box", vec![]).expect("review");
        assert_eq!(Some(r.tip.clone()), info.start);
        drop(r);
        let _ = std::fs::remove_dir_all(&top);
    }

    #[test]
    fn the_guest_command_bundles_the_branch_since_its_start() {
        let (top, dir, guest, info) = setup("cmd");
        let run = |g: &Path| {
            Command::new(&guest_argv(&info)[0])
                .args(&guest_argv(&info)[1..])
                .current_dir(g)
                .output()
                .expect("run")
        };
        assert_eq!(run(&guest).status.code(), Some(NOTHING_NEW));
        sh(&guest, "echo two > a.txt && git commit -qam two");
        let out = run(&guest);
        assert!(out.status.success());
        let b = top.join("out.bundle");
        std::fs::write(&b, &out.stdout).expect("write");
        receive(&dir, Some(&b)).expect("receive");
        assert_eq!(
            Review::open(&dir, "box", vec![]).expect("review").tip,
            sh(&guest, "git rev-parse HEAD")
        );
        sh(
            &guest,
            &format!("git checkout -q --detach && git branch -qD {}", info.branch),
        );
        assert_eq!(run(&guest).status.code(), Some(NO_BRANCH));
        let _ = std::fs::remove_dir_all(&top);
    }
}
