{{/*
Full name of every object: fullnameOverride, else the release name when it contains
"tikv-operator", else "<release>-tikv-operator".
*/}}
{{- define "tikv-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "tikv-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tikv-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tikv-operator.serviceAccountName" -}}
{{- default (include "tikv-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tikv-operator.leaseName" -}}
{{- default (include "tikv-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Namespaces given Roles with scope `namespace`. */}}
{{- define "tikv-operator.roleNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "tikv-operator.selectorLabels" -}}
app.kubernetes.io/name: tikv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tikv-operator.labels" -}}
app.kubernetes.io/name: tikv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The operator's rules on its own kinds and on what its instances own. The same rules as
manifests/operator/clusterrole.yaml and manifests/operator/namespaced/role.yaml (compared by
xtask/src/chart.rs); Secrets only read (the client Secrets of TLS Clusters), no wildcards.
*/}}
{{- define "tikv-operator.rules" -}}
- apiGroups: [core.tikv.org]
  resources: [clusters]
  verbs: [get, list, watch, patch]
- apiGroups: [core.tikv.org]
  resources: [pdgroups, tikvgroups]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [core.tikv.org]
  resources: [pds, tikvs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [core.tikv.org]
  resources: [clusters/status, pdgroups/status, pds/status, tikvgroups/status, tikvs/status]
  verbs: [patch]
- apiGroups: [core.tikv.org]
  resources: [clusters/finalizers, pdgroups/finalizers, pds/finalizers, tikvgroups/finalizers, tikvs/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods, configmaps, services, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{- define "tikv-operator.nodeRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
{{- end -}}

{{/*
Labels of a monitoring object: the chart's labels and the operator component, plus the
object's `labels` value, which adds labels but cannot replace the chart's own.
Called with (list $ <labels value>).
*/}}
{{- define "tikv-operator.monitoringLabels" -}}
{{- $labels := include "tikv-operator.labels" (index . 0) | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/component" "operator" -}}
{{- toYaml (merge $labels (index . 1 | default (dict))) -}}
{{- end -}}

{{/*
A copy of a manifests/monitoring/ file under files/ (written by `cargo xtask gen-crds`), parsed.
Called with (list $ "<file>").
*/}}
{{- define "tikv-operator.monitoringSource" -}}
{{- $file := printf "files/%s" (index . 1) -}}
{{- $source := (index . 0).Files.Get $file | fromYaml -}}
{{- if or (not $source.spec) (hasKey $source "Error") -}}
{{- fail (printf "%s is missing or invalid: run `cargo xtask gen-crds`" $file) -}}
{{- end -}}
{{- toYaml $source -}}
{{- end -}}
