//! Hand-written manifests shaped like the operator's (labels, headless service, ConfigMap,
//! PVCs), for tests that need PD or TiKV pods before the operator exists.

use crate::agent::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::config;

/// Instance label shared by the fixtures of one cluster.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

fn zone(i: usize) -> &'static str {
    ["zone-a", "zone-b", "zone-c"][i % 3]
}

/// Headless service `<cluster>-pd-peer`, ConfigMap `<cluster>-pd` and `replicas` PD pods
/// `<cluster>-pd-<i>` (one zone each, round robin) with a data PVC each, forming one PD
/// cluster through `--initial-cluster`.
pub fn pd_cluster(namespace: &str, cluster: &str, replicas: usize) -> String {
    let svc = format!("{cluster}-pd-peer");
    let initial: Vec<String> = (0..replicas)
        .map(|i| format!("{cluster}-pd-{i}=http://{cluster}-pd-{i}.{svc}.{namespace}.svc:2380"))
        .collect();
    let initial = initial.join(",");
    let mut out = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {svc}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    {COMPONENT_LABEL}: pd
    {INSTANCE_LABEL}: {cluster}
  ports:
  - name: client
    port: 2379
  - name: peer
    port: 2380
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {cluster}-pd
data:
  pd.toml: |
    [replication]
    max-replicas = 3
    location-labels = ["zone"]
    [schedule]
    patrol-region-interval = "1s"
"#
    );
    for i in 0..replicas {
        out.push_str(&pd_pod(namespace, cluster, i, &initial));
    }
    out
}

/// One PD pod (and its PVC) of [`pd_cluster`]; `initial_cluster` empty means `--join`.
pub fn pd_pod(namespace: &str, cluster: &str, i: usize, initial_cluster: &str) -> String {
    let svc = format!("{cluster}-pd-peer");
    let name = format!("{cluster}-pd-{i}");
    let membership = if initial_cluster.is_empty() {
        format!("--join=http://{cluster}-pd-0.{svc}.{namespace}.svc:2379")
    } else {
        format!("--initial-cluster={initial_cluster}")
    };
    format!(
        r#"---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: pd-{name}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {sc}
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    {COMPONENT_LABEL}: pd
    {MANAGED_BY_LABEL}: {MANAGED_BY}
    {INSTANCE_LABEL}: {cluster}
spec:
  hostname: {name}
  subdomain: {svc}
  nodeSelector:
    topology.kubernetes.io/zone: {zone}
  containers:
  - name: pd
    image: pingcap/pd:v8.5.5
    command: ["/pd-server"]
    args:
    - --name=$(POD_NAME)
    - --data-dir=/var/lib/pd
    - --client-urls=http://0.0.0.0:2379
    - --advertise-client-urls=http://$(POD_NAME).{svc}.$(NAMESPACE).svc:2379
    - --peer-urls=http://0.0.0.0:2380
    - --advertise-peer-urls=http://$(POD_NAME).{svc}.$(NAMESPACE).svc:2380
    - {membership}
    - --config=/etc/pd/pd.toml
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    volumeMounts:
    - name: data
      mountPath: /var/lib/pd
    - name: config
      mountPath: /etc/pd
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: pd-{name}
  - name: config
    configMap:
      name: {cluster}-pd
"#,
        sc = config::STORAGE_CLASS,
        zone = zone(i),
    )
}

/// Headless service `<cluster>-tikv-peer` (created once) plus TiKV pod `<cluster>-tikv-<i>`
/// with a data PVC, pointing at the PD cluster of [`pd_cluster`].
pub fn tikv_pod(namespace: &str, cluster: &str, i: usize) -> String {
    let svc = format!("{cluster}-tikv-peer");
    let name = format!("{cluster}-tikv-{i}");
    let pd = format!("http://{cluster}-pd-peer.{namespace}.svc:2379");
    let z = zone(i);
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {svc}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    {COMPONENT_LABEL}: tikv
    {INSTANCE_LABEL}: {cluster}
  ports:
  - name: grpc
    port: 20160
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: tikv-{name}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {sc}
  resources:
    requests:
      storage: 10Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    {COMPONENT_LABEL}: tikv
    {MANAGED_BY_LABEL}: {MANAGED_BY}
    {INSTANCE_LABEL}: {cluster}
spec:
  hostname: {name}
  subdomain: {svc}
  nodeSelector:
    topology.kubernetes.io/zone: {z}
  containers:
  - name: tikv
    image: pingcap/tikv:v8.5.5
    command: ["/tikv-server"]
    args:
    - --pd={pd}
    - --addr=0.0.0.0:20160
    - --advertise-addr=$(POD_NAME).{svc}.$(NAMESPACE).svc:20160
    - --data-dir=/var/lib/tikv
    - --labels=zone={z}
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    volumeMounts:
    - name: data
      mountPath: /var/lib/tikv
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: tikv-{name}
"#,
        sc = config::STORAGE_CLASS,
    )
}

/// The basic example (examples/basic/cluster.yaml) with small resources and volumes, and PD's
/// `location-labels` set so that stores carry their node's zone.
pub const BASIC_SMALL: &str = r#"
apiVersion: core.tikv.org/v1alpha1
kind: Cluster
metadata:
  name: basic
spec: {}
---
apiVersion: core.tikv.org/v1alpha1
kind: PDGroup
metadata:
  name: pd
spec:
  cluster:
    name: basic
  replicas: 3
  template:
    spec:
      version: v8.5.5
      config: |
        [replication]
        location-labels = ["zone"]
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
---
apiVersion: core.tikv.org/v1alpha1
kind: TiKVGroup
metadata:
  name: tikv
spec:
  cluster:
    name: basic
  replicas: 3
  template:
    spec:
      version: v8.5.5
      config: |
        [storage]
        reserve-space = "1GB"
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
"#;
