//! Builds a TiKVGroup in code and prints it as YAML, ready for `kubectl apply -f -`.
//!
//! ```sh
//! cargo run -p tikv-operator-api --example print_tikvgroup -- <name> <cluster> <replicas> [version]
//! ```

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tikv_operator_api::tikv::TiKVTemplate;
use tikv_operator_api::{
    ClusterReference, TiKVGroup, TiKVGroupSpec, TiKVTemplateSpec, Volume, VolumeMount,
    VolumeMountType,
};

/// TiKV version used when none is given.
pub const DEFAULT_VERSION: &str = "v8.5.5";

/// A TiKVGroup of `replicas` stores of `version` in Cluster `cluster`, each with a 100Gi
/// data volume.
pub fn tikv_group(name: &str, cluster: &str, replicas: i32, version: &str) -> TiKVGroup {
    let data = Volume {
        name: "data".to_owned(),
        mounts: vec![VolumeMount {
            type_: Some(VolumeMountType::Data),
            ..Default::default()
        }],
        storage: Quantity("100Gi".to_owned()),
        ..Default::default()
    };
    TiKVGroup::new(
        name,
        TiKVGroupSpec {
            cluster: ClusterReference {
                name: cluster.to_owned(),
            },
            replicas,
            min_ready_seconds: None,
            max_unavailable: None,
            failover: None,
            schedule_policies: Vec::new(),
            template: TiKVTemplate {
                metadata: None,
                spec: TiKVTemplateSpec {
                    version: version.to_owned(),
                    volumes: vec![data],
                    ..Default::default()
                },
            },
        },
    )
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, cluster, replicas, version) = match args.as_slice() {
        [name, cluster, replicas] => (name, cluster, replicas, DEFAULT_VERSION),
        [name, cluster, replicas, version] => (name, cluster, replicas, version.as_str()),
        _ => {
            return Err("usage: print_tikvgroup <name> <cluster> <replicas> [version]".into());
        }
    };
    let replicas: i32 = replicas
        .parse()
        .map_err(|e| format!("replicas {replicas:?}: {e}"))?;
    print!(
        "{}",
        serde_norway::to_string(&tikv_group(name, cluster, replicas, version))?
    );
    Ok(())
}
