//! Prints a fixture: `cargo run -p tikv-operator-e2e --example print_fixture -- pd NS NAME N`
//! or `... -- tikv NS NAME I` (to try the environment by hand with kubectl).

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let n: usize = get(3).parse().unwrap_or(3);
    match get(0).as_str() {
        "pd" => print!(
            "{}",
            tikv_operator_e2e::fixtures::pd_cluster(&get(1), &get(2), n)
        ),
        "tikv" => print!(
            "{}",
            tikv_operator_e2e::fixtures::tikv_pod(&get(1), &get(2), n)
        ),
        other => anyhow::bail!("unknown fixture {other:?}: pd | tikv"),
    }
    Ok(())
}
