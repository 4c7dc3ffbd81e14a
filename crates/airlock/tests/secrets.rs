//! Secrets for `run`: read on the host at start, delivered as $NAME and /run/secrets/NAME
//! (0400, tmpfs), never written to the state directory, never in an error; a missing source is
//! an error naming the variable.

mod common;

use common::{e2e, Airlock};

fn grep_tree(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            hits.extend(grep_tree(&p, needle));
        } else if std::fs::read(&p)
            .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn secrets_arrive_in_memory_only() {
    if !e2e("secrets_arrive_in_memory_only") {
        return;
    }
    let a = Airlock::root();
    let value = format!("tok-{}", common::random_hex());
    let file = a.dir.join("secret-file");
    std::fs::write(&file, "from-a-file\n").expect("write");
    let from_file = format!("FILETOK=file:{}", file.display());
    let out = a.run_with_env(
        &[("HOST_TOKEN", &value)],
        &["run", "--net", "off", "--secret", "TOKEN=env:HOST_TOKEN", "--secret", &from_file, "--", "sh", "-c",
          "echo \"$TOKEN\"; cat /run/secrets/TOKEN; echo; cat /run/secrets/FILETOK; echo; stat -c '%a %U' /run/secrets/TOKEN"],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(
        out.stdout,
        format!("{value}\n{value}\nfrom-a-file\n400 agent\n"),
        "{}",
        out.describe()
    );
    assert!(
        grep_tree(&a.state_dir(), &value).is_empty(),
        "a secret reached the state directory"
    );
    // Host variables are still not passed by default: only as the named secret.
    let out = a.run_with_env(
        &[("HOST_TOKEN", &value)],
        &["run", "--net", "off", "--", "sh", "-c", "env"],
    );
    assert!(!out.stdout.contains(&value), "{}", out.describe());
    // A missing source is an error naming it, not an empty secret.
    let out = a.run(&[
        "run",
        "--net",
        "off",
        "--secret",
        "TOKEN=env:HOST_TOKEN",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 2, "{}", out.describe());
    assert!(
        out.stderr.contains("HOST_TOKEN is not set"),
        "{}",
        out.describe()
    );
    // Named sandboxes take secrets too (tests/workspace.rs follows them in depth): creating
    // one stores the source, never the value.
    let out = a.run_with_env(
        &[("HOST_TOKEN", &value)],
        &[
            "create",
            "sec",
            "--net",
            "off",
            "--secret",
            "TOKEN=env:HOST_TOKEN",
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        !out.stderr.contains(&value) && !out.stdout.contains(&value),
        "{}",
        out.describe()
    );
    let spec =
        std::fs::read_to_string(a.state_dir().join("sandboxes/sec/spec.json")).expect("spec.json");
    assert!(
        spec.contains("HOST_TOKEN") && !spec.contains(&value),
        "{spec}"
    );
    assert_eq!(a.run(&["rm", "sec"]).code(), 0);
    common::stop_engines_of(&a);
}
