//! Asks a PD cluster for its TiKV stores and prints one line per store.
//!
//! ```sh
//! cargo run -p tikv-operator-pd-client --example stores -- http://127.0.0.1:2379
//! # mutual TLS:
//! cargo run -p tikv-operator-pd-client --example stores -- https://pd:2379 \
//!     --ca ca.crt --cert tls.crt --key tls.key
//! ```
//!
//! Several PD URLs may be given; any member that answers leads the client to the leader.

use std::time::Duration;

use pd_client::{PdApi, PdClient, PdClientConfig, PdError, TlsConfig};

const USAGE: &str = "usage: stores <pd-url>... [--ca FILE --cert FILE --key FILE]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut urls = Vec::new();
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--ca" => &mut ca,
            "--cert" => &mut cert,
            "--key" => &mut key,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => {
                urls.push(arg);
                continue;
            }
        };
        *slot = Some(args.next().ok_or(USAGE)?);
    }
    if urls.is_empty() {
        return Err(USAGE.into());
    }

    let mut config = PdClientConfig::new(urls).with_request_timeout(Duration::from_secs(5));
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => {
            config = config.with_tls(TlsConfig::from_files(ca, cert, key)?);
        }
        (None, None, None) => {}
        _ => return Err("--ca, --cert and --key go together".into()),
    }
    let pd = PdClient::connect(config).await?;

    let members = pd.members().await?;
    println!(
        "PD cluster {}: {} members, leader {}",
        members.cluster_id,
        members.members.len(),
        members
            .leader
            .as_ref()
            .map_or("none", |leader| leader.name.as_str())
    );
    let stores = match pd.stores().await {
        Ok(stores) => stores,
        // A PD cluster that no TiKV has joined yet.
        Err(PdError::NotBootstrapped { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    println!("{} stores", stores.len());
    for store in stores {
        println!(
            "store {} {} {:?}/{:?} {:?} version={} leaders={} regions={} labels={:?}",
            store.id,
            store.address,
            store.state,
            store.node_state,
            store.liveness,
            store.version,
            store
                .leader_count
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            store.region_count,
            store.labels,
        );
    }
    Ok(())
}
