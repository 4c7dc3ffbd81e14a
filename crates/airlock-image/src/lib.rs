//! OCI images for airlock: references normalized like Docker's ([`reference`]), a small
//! registry client ([`registry`]), pulls ([`pull`]) and imports ([`import`]) into a
//! content-addressed store of unpacked layers ([`store`]), and the hostile-archive-safe layer
//! unpacker ([`unpack`]). The container backend stacks a record's layer directories as the
//! lower layers of the sandbox's overlay root; the microVM backend boots one disk made of
//! them ([`vm_disk`]).

pub mod digest;
pub mod import;
pub mod layout;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod user;
pub mod vm_disk;
pub mod zstd;

pub use digest::Digest;
pub use reference::Reference;
pub use registry::{Client, RegistryConfig};
pub use store::{ImageRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] reference::ParseError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("image {reference} has no manifest for linux/{arch}")]
    NoPlatform {
        reference: String,
        arch: &'static str,
    },
    #[error("cannot import: {0}")]
    BadImport(String),
    #[error("image {0} is not in the store")]
    NotInStore(String),
}

impl ImageError {
    pub fn hint(&self) -> String {
        use registry::RegistryError as R;
        match self {
            ImageError::Reference(_) => {
                "write it like Docker does: NAME[:TAG][@sha256:DIGEST], e.g. python:3.12-alpine".into()
            }
            ImageError::Registry(R::Unreachable { host, .. }) => format!(
                "check the network and the registry's name; a plain-HTTP registry must be listed in [images] insecure_registries = [\"{host}\"], and [images] mirrors can point at a reachable copy"
            ),
            ImageError::Registry(R::NotFound { reference, .. }) => {
                format!("check the name and tag of {reference}; `airlock image ls` lists what is already here")
            }
            ImageError::Registry(R::AuthRequired { host, .. }) => format!(
                "log in with `docker login {host}` or `podman login {host}` (airlock reads their auth files)"
            ),
            ImageError::Registry(_) => "try again; if it persists, the registry is misbehaving".into(),
            ImageError::Store(store::StoreError::DigestMismatch { .. }) => {
                "the content does not match its digest: the source is corrupt or was tampered with; nothing was kept".into()
            }
            ImageError::Store(store::StoreError::Unpack { .. }) => {
                "the layer was refused as unsafe; nothing was kept".into()
            }
            ImageError::Store(_) => {
                "check free space and permissions of the state directory (`airlock doctor` shows it)".into()
            }
            ImageError::NoPlatform { .. } => "use an image built for this machine's architecture".into(),
            ImageError::BadImport(_) => {
                "import an OCI image layout (directory or tar) or a `docker save` archive; --tag NAME names it".into()
            }
            ImageError::NotInStore(r) => format!("pull it first: airlock image pull {r}"),
        }
    }
}
