//! `cargo xtask e2e ...` entry point.

/// Arguments of `cargo xtask e2e`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `cargo xtask e2e`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the e2e environment is not built yet")
}
