{{/* The chart's name. */}}
{{- define "sockscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-name, or the release name when it holds the chart's. */}}
{{- define "sockscope.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sockscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sockscope.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "sockscope.labels" -}}
helm.sh/chart: {{ include "sockscope.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: metrics
app.kubernetes.io/part-of: {{ include "sockscope.name" . }}
{{ include "sockscope.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sockscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sockscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sockscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sockscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag[@digest]; image.repository is required. */}}
{{- define "sockscope.image" -}}
{{- $repo := required "image.repository is required: build the image with scripts/image, push it to your registry and set image.registry and image.repository (README \"Install\")" .Values.image.repository }}
{{- $ref := printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- with .Values.image.registry }}{{ $ref = printf "%s/%s" . $ref }}{{ end }}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{/* "true" when the agent serves TLS (webConfig). */}}
{{- define "sockscope.tls" -}}
{{- if or (hasKey .Values.webConfig.config "tls_server_config") (and .Values.webConfig.existingSecret .Values.webConfig.existingSecretTLS) }}true{{ end }}
{{- end }}

{{/* The Secret holding web.yml, or "" without webConfig. */}}
{{- define "sockscope.webConfigSecret" -}}
{{- if .Values.webConfig.existingSecret }}
{{- .Values.webConfig.existingSecret }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web" (include "sockscope.fullname" .) }}
{{- end }}
{{- end }}

{{/* The scheme Prometheus scrapes with: the monitor's, else from webConfig. */}}
{{- define "sockscope.scheme" -}}
{{- if .scheme }}{{ .scheme }}{{ else if .tls }}https{{ else }}http{{ end }}
{{- end }}

{{/* The chart's relabelings: the job the alert rules select, and the node. */}}
{{- define "sockscope.relabelings" -}}
- action: replace
  targetLabel: job
  replacement: sockscope
- action: replace
  sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
{{- end }}
