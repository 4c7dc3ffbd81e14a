//! Rendering the way back's check of a bind-mode checkout (`airlock_work::wayback`).

use airlock_work::wayback::Report;

/// Print a report on stderr. Returns whether git control files had to be undone.
pub fn print(report: &Report) -> bool {
    if !report.git.is_empty() {
        errln!(
            "airlock: the sandbox changed how git behaves in your checkout ({} change(s)); undone:",
            report.git.len()
        );
        for c in &report.git {
            errln!(
                "  {:<8} {}  ({})",
                c.what,
                airlock_work::gate::shown(&c.path),
                airlock_work::gate::shown(&c.note)
            );
        }
    }
    if !report.config.is_empty() {
        errln!(
            "airlock: the sandbox changed configuration that tools obey in your checkout; review before running them there:"
        );
        for c in &report.config {
            errln!(
                "  {:<8} {}  ({})",
                c.what,
                airlock_work::gate::shown(&c.path),
                airlock_work::gate::shown(&c.note)
            );
        }
    }
    if report.partial {
        errln!(
            "airlock: warning: the checkout has more than {} entries; the check on the way out was partial",
            airlock_work::wayback::MAX_ENTRIES
        );
    }
    !report.git.is_empty()
}

/// A named sandbox's report, left by its supervisor in its folder: printed (and removed).
/// Returns whether git control files had to be undone.
pub fn print_saved(dir: &std::path::Path) -> bool {
    let f = dir.join(airlock_work::wayback::REPORT_FILE);
    let Some(b) = airlock_work::review::read_small(&f, 1 << 22) else {
        return false;
    };
    let _ = std::fs::remove_file(&f);
    serde_json::from_slice::<Report>(&b).is_ok_and(|r| print(&r))
}
