//! Packaging for containers: the FROM scratch images (deploy/images/build.sh) built with buildah,
//! inspected and run with podman; the Kubernetes manifests (deploy/k8s) through a schema validator;
//! deploy/compose.yaml's shape, and compose.yaml run with podman-compose from a first start to
//! `down -v`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it runs buildah, podman and the validator, and a failed setup step is a failed test"
)]

mod compose;
mod images;
mod manifests;
