//! `setup = [...]`: script paths from plugins and the project, resolved against the file that
//! names them, concatenated in layer order; new ones from the project need trust.

use super::*;

#[test]
fn setup_scripts_resolve_concatenate_and_need_trust() {
    let t = TempDir::new("setup");
    t.write("p/tools/plug.toml", "setup = [\"./plug-setup.sh\"]\n");
    let project = t.write(
        "p/airlock.toml",
        "plugins = [\"./tools/plug.toml\"]\nsetup = [\"./scripts/setup.sh\", \"./tools/plug-setup.sh\"]\n",
    );
    let p = project.parent().unwrap();
    let r = load(&opts(p)).unwrap();
    assert_eq!(
        r.effective.setup,
        vec![p.join("tools/plug-setup.sh"), p.join("scripts/setup.sh")],
        "plugin first, duplicates dropped"
    );
    let sources: Vec<String> = r.origins["setup"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        sources,
        [
            format!("plugin:{}", p.join("tools/plug.toml").display()),
            format!("project:{}", project.display())
        ]
    );
    let w = &r.project.as_ref().expect("project").widening;
    let setup: Vec<&str> = w
        .iter()
        .filter(|w| w.key == "setup")
        .map(|w| w.detail.as_str())
        .collect();
    assert_eq!(setup.len(), 2, "{w:?}");
    assert!(setup[1].contains("scripts/setup.sh"), "{setup:?}");
    // It prints and loads back.
    let text = r.effective.to_toml_string().unwrap();
    assert!(text.contains("\nsetup = ["), "{text}");
    t.write("again/airlock.toml", &text);
    assert_eq!(
        load(&opts(&t.path().join("again")))
            .unwrap()
            .effective
            .setup,
        r.effective.setup
    );
}
