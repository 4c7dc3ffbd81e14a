//! Engine tier: `allow`/`deny` over a temporary store and the fake backend — the allowlist is
//! put in force in a running sandbox first, then stored (spec.json and record) and journaled;
//! a stopped sandbox's is only stored; refusals change nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use airlock_engine::action::{Action, ActionData, PolicyChange, Via};
use airlock_engine::backend::{Call, FakeOp};
use airlock_engine::{Engine, FakeBackend};
use airlock_model::exit;
use common::TempDir;

const SPEC: &str = r#"{"net":"filtered","domains":["github.com"],"ports":[443],"profile":"moderate","extra":{"kept":true}}"#;

struct Fixture {
    _dir: TempDir,
    fake: Arc<FakeBackend>,
    engine: Engine,
}

fn fixture(spec: &str) -> Fixture {
    let dir = TempDir::new("live-policy");
    let fake = Arc::new(FakeBackend::new());
    let engine = Engine::open(dir.path(), fake.clone()).expect("open engine");
    engine.create("web", spec).expect("create");
    Fixture {
        _dir: dir,
        fake,
        engine,
    }
}

fn allow(f: &Fixture, domain: &str, port: Option<u64>) -> Result<PolicyChange, (String, i32)> {
    run(
        f,
        Action::Allow {
            name: "web".into(),
            domain: domain.into(),
            port,
            via: Via::Cli,
        },
    )
}

fn deny(f: &Fixture, domain: &str) -> Result<PolicyChange, (String, i32)> {
    run(
        f,
        Action::Deny {
            name: "web".into(),
            domain: domain.into(),
            via: Via::Mcp,
        },
    )
}

fn run(f: &Fixture, a: Action) -> Result<PolicyChange, (String, i32)> {
    match f.engine.execute(a) {
        Ok(ActionData::Policy(p)) => Ok(p),
        Ok(other) => panic!("{other:?}"),
        Err(e) => {
            let a = e.action_error();
            Err((
                format!("{}|{}", a.kind, a.hint.unwrap_or_default()),
                e.exit_code(),
            ))
        }
    }
}

fn stored(f: &Fixture) -> (serde_json::Value, serde_json::Value) {
    let file = std::fs::read(f.engine.sandbox_dir("web").join("spec.json")).unwrap();
    let record = f.engine.status("web").unwrap().record.spec;
    (serde_json::from_slice(&file).unwrap(), record)
}

fn policy_events(f: &Fixture) -> Vec<serde_json::Value> {
    airlock_engine::audit::read(&f.engine.sandbox_dir("web"))
        .into_iter()
        .filter(|e| e["category"] == "policy")
        .collect()
}

fn set_egress_calls(f: &Fixture) -> Vec<(Vec<String>, Vec<u16>)> {
    f.fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::SetEgress(_, d, p) => Some((d, p)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_running_sandbox_gets_it_at_once_then_it_is_stored_and_journaled() {
    let f = fixture(SPEC);
    f.engine.start("web").unwrap();
    let p = allow(&f, "Example.COM.", Some(8443)).unwrap();
    assert_eq!(
        (p.op.as_str(), p.domain.as_str(), p.port, p.changed, p.live),
        ("allow", "example.com", Some(8443), true, true)
    );
    assert_eq!(p.domains, ["github.com", "example.com"]);
    assert_eq!(p.ports, [443, 8443]);
    assert_eq!(
        set_egress_calls(&f),
        [(
            vec!["github.com".to_string(), "example.com".to_string()],
            vec![443, 8443]
        )]
    );
    let (file, record) = stored(&f);
    assert_eq!(
        file["domains"],
        serde_json::json!(["github.com", "example.com"])
    );
    assert_eq!(file["ports"], serde_json::json!([443, 8443]));
    assert_eq!(file["extra"]["kept"], true, "other spec fields survive");
    assert_eq!(record["domains"], file["domains"]);

    let p = deny(&f, "github.com").unwrap();
    assert_eq!((p.changed, p.live), (true, true));
    assert_eq!(p.domains, ["example.com"]);
    let (file, _) = stored(&f);
    assert_eq!(file["domains"], serde_json::json!(["example.com"]));

    let ev = policy_events(&f);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        (
            &ev[0]["op"],
            &ev[0]["domain"],
            &ev[0]["port"],
            &ev[0]["via"]
        ),
        (
            &serde_json::json!("allow"),
            &serde_json::json!("example.com"),
            &serde_json::json!(8443),
            &serde_json::json!("cli")
        )
    );
    assert_eq!(ev[1]["op"], "deny");
    assert_eq!(ev[1]["via"], "mcp");
    assert!(ev[1]["time"].is_string());
    assert!(airlock_engine::audit::human(&ev[1]).contains("deny github.com via mcp"));
}

#[test]
fn a_stopped_sandbox_is_only_stored() {
    let f = fixture(SPEC);
    let p = allow(&f, "*.npmjs.org", None).unwrap();
    assert_eq!((p.changed, p.live), (true, false));
    assert!(set_egress_calls(&f).is_empty());
    assert_eq!(
        stored(&f).0["domains"],
        serde_json::json!(["github.com", "*.npmjs.org"])
    );
    // Again: nothing changes, no error.
    let p = allow(&f, "*.npmjs.org", None).unwrap();
    assert!(!p.changed);
}

#[test]
fn refusals_change_nothing() {
    let f = fixture(SPEC);
    f.engine.start("web").unwrap();
    let before = stored(&f);
    let (e, code) = allow(&f, "1.2.3.4", None).unwrap_err();
    assert!(e.starts_with("bad_request|give a host name"), "{e}");
    assert_eq!(code, exit::USAGE);
    let (e, _) = allow(&f, "x.com", Some(70000)).unwrap_err();
    assert!(e.starts_with("bad_request"), "{e}");
    let (e, code) = allow(&f, "metadata.google.internal", None).unwrap_err();
    assert!(e.starts_with("refused|"), "{e}");
    assert_eq!(code, exit::POLICY_REFUSED);
    let (e, _) = allow(&f, "x.com", Some(3128)).unwrap_err();
    assert!(e.starts_with("refused|"), "{e}");
    allow(&f, "*.x.com", None).unwrap();
    let after_wild = stored(&f);
    let (e, _) = deny(&f, "a.x.com").unwrap_err();
    assert!(e.starts_with("refused|deny *.x.com instead"), "{e}");
    assert_eq!(stored(&f), after_wild);
    // The backend cannot take it: nothing stored, the error says why.
    f.fake.fail("web", FakeOp::SetEgress, "no policy socket");
    let (e, code) = allow(&f, "new.com", None).unwrap_err();
    assert!(e.starts_with("backend|"), "{e}");
    assert_eq!(code, exit::SANDBOX_FAILED);
    assert_eq!(stored(&f), after_wild);
    assert_ne!(before, after_wild);
    let (e, code) = run(
        &f,
        Action::Allow {
            name: "nope".into(),
            domain: "a.com".into(),
            port: None,
            via: Via::Api,
        },
    )
    .unwrap_err();
    assert!(e.starts_with("not_found|"), "{e}");
    assert_eq!(code, exit::NOT_FOUND);
}

#[test]
fn no_allowlist_without_filtered_network() {
    for net in ["off", "open"] {
        let f = fixture(&format!(r#"{{"net":"{net}","domains":[],"ports":[443]}}"#));
        let (e, code) = allow(&f, "example.com", None).unwrap_err();
        assert!(
            e.starts_with("refused|an allowlist applies to --net filtered only"),
            "{e}"
        );
        assert_eq!(code, exit::POLICY_REFUSED);
        assert_eq!(stored(&f).0["domains"], serde_json::json!([]));
    }
}
