//! Integration tests: the real `layerctl` against the real `layerd` in a booted virtual host.
//! One test binary (each links the whole harness); one module per area.

mod common;
mod skeleton;
mod transactions;
mod layering;
mod repos;
mod rebase;
mod kargs;
mod overrides;
mod grpc;
mod polkit;
mod packaging;
mod live;
mod compat;
