//! End-to-end environment of tikv-operator and helpers for its tests.
//!
//! `cargo xtask e2e env up` starts, on loopback only, etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok (fake nodes in three zones) and an agent that
//! provisions volumes, resolves pod names, runs real `pd-server` processes for PD pods and
//! simulated stores for TiKV pods. `cargo xtask e2e test` runs the tests in `e2e/tests`.

pub mod agent;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod fixtures;
pub mod harness;
pub mod operator;
pub mod pki;
pub mod podspec;
pub mod process;
pub mod proto;
pub mod raftsim;
pub mod simulator;
pub mod watchers;
pub mod world;
pub mod yaml;
