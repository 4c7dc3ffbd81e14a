//! What this build offers the planner, whatever the host. A leaf of `isolation` and
//! `microvm`.

/// What this build provides, whatever the host: the container and microVM backends on the
/// host's root filesystem (no image support yet). The planner refuses anything else; the
/// microVM lowering also needs what `MicroVm::check` found on the host (`HostFacts::vm`).
pub fn offer() -> airlock_model::plan::Offer {
    airlock_model::plan::Offer {
        backends: vec![
            airlock_model::policy::BackendKind::Container,
            airlock_model::policy::BackendKind::Microvm,
        ],
        images: true,
    }
}
