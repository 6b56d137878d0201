//! `tikv-operator-e2e`: the same commands as `cargo xtask e2e`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "tikv-operator-e2e",
    about = "tikv-operator end-to-end environment"
)]
struct Cli {
    #[command(flatten)]
    args: tikv_operator_e2e::cli::Args,
}

fn main() -> anyhow::Result<()> {
    tikv_operator_e2e::cli::run(Cli::parse().args)
}
