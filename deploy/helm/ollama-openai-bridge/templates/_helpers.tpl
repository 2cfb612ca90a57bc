{{/*
Names and labels, as `helm create` lays them out: a release called like the chart keeps the
chart's name for every object (deploy/kubernetes is rendered that way).
*/}}
{{- define "ollama-openai-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ollama-openai-bridge.fullname" -}}
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

{{- define "ollama-openai-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ollama-openai-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ollama-openai-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ollama-openai-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ollama-openai-bridge.secretName" -}}
{{- .Values.secret.existingSecret | default (include "ollama-openai-bridge.fullname" .) }}
{{- end }}

{{/* Whether any of files.* is set: the files Secret and its mount. */}}
{{- define "ollama-openai-bridge.hasFiles" -}}
{{- if or .Values.files.modelMapping .Values.files.upstreams .Values.files.tokenBudgets }}true{{ end }}
{{- end }}

{{- define "ollama-openai-bridge.redisName" -}}
{{- printf "%s-redis" (include "ollama-openai-bridge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A setting's value as its environment variable: a list joined with commas (CORS_ORIGINS,
PROXY_API_KEYS, ...), an object as JSON (BACKEND_HEADERS, ...), a whole number without the
exponent Go prints for large floats (values files decode numbers as float64: 67108864 would
otherwise become "6.7108864e+07", which REQUEST_MAX_SIZE refuses).
*/}}
{{- define "ollama-openai-bridge.envValue" -}}
{{- if kindIs "map" . }}{{ toJson . }}
{{- else if kindIs "slice" . }}{{ join "," . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}

{{/* The settings of `config` the chart sets itself, merged over the values. */}}
{{- define "ollama-openai-bridge.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.files.modelMapping }}
{{- if $config.MODEL_MAPPING_FILE }}{{ fail "set files.modelMapping or config.MODEL_MAPPING_FILE, not both" }}{{ end }}
{{- $_ := set $config "MODEL_MAPPING_FILE" "/etc/ollama-openai-bridge/files/models.json" }}
{{- end }}
{{- if .Values.files.upstreams }}
{{- if $config.UPSTREAMS_FILE }}{{ fail "set files.upstreams or config.UPSTREAMS_FILE, not both" }}{{ end }}
{{- $_ := set $config "UPSTREAMS_FILE" "/etc/ollama-openai-bridge/files/upstreams.yaml" }}
{{- end }}
{{- if .Values.files.tokenBudgets }}
{{- if $config.TOKEN_BUDGETS_FILE }}{{ fail "set files.tokenBudgets or config.TOKEN_BUDGETS_FILE, not both" }}{{ end }}
{{- $_ := set $config "TOKEN_BUDGETS_FILE" "/etc/ollama-openai-bridge/files/budgets.json" }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- if or $config.SSL_CERTFILE $config.SSL_KEYFILE }}{{ fail "set tls.existingSecret or config.SSL_CERTFILE/SSL_KEYFILE, not both" }}{{ end }}
{{- $_ := set $config "SSL_CERTFILE" "/etc/ollama-openai-bridge/tls/tls.crt" }}
{{- $_ := set $config "SSL_KEYFILE" "/etc/ollama-openai-bridge/tls/tls.key" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The port the proxy listens on: PROXY_PORT, else Ollama's. */}}
{{- define "ollama-openai-bridge.port" -}}
{{- int64 (.Values.config.PROXY_PORT | default 11434) }}
{{- end }}

{{- define "ollama-openai-bridge.scheme" -}}
{{- if or .Values.tls.existingSecret .Values.config.SSL_CERTFILE }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The port's name: "https" when the proxy serves TLS, so that meshes, ingress controllers and
Prometheus (which read a port's name or appProtocol to choose the protocol) do not speak plain
HTTP to it (issue #19's review, L4).
*/}}
{{- define "ollama-openai-bridge.portName" -}}
{{- include "ollama-openai-bridge.scheme" . | lower }}
{{- end }}

{{/*
Whether the pods carry prometheus.io/* annotations. A Prometheus that scrapes by annotation
sends no key, and with inbound keys /metrics answers 401 (security.py: only /, /health and the
API docs are open), so "auto" emits them only when no key can be set: no
secret.values.PROXY_API_KEYS, no config.PROXY_API_KEYS_FILE, no PROXY_API_KEYS* in secret.extra or
extraEnv, and no secret.existingSecret (whose content the chart cannot see). With keys, the ServiceMonitor sends one (serviceMonitor.authorization).
*/}}
{{- define "ollama-openai-bridge.scrapeAnnotations" -}}
{{- $mode := toString .Values.prometheusAnnotations }}
{{- if include "ollama-openai-bridge.metricsEnabled" . }}
{{- if eq $mode "true" }}true
{{- else if eq $mode "auto" }}
{{- $keys := or .Values.secret.values.PROXY_API_KEYS .Values.config.PROXY_API_KEYS_FILE .Values.secret.existingSecret }}
{{- range $name, $_ := .Values.secret.extra }}{{ if hasPrefix "PROXY_API_KEYS" $name }}{{ $keys = true }}{{ end }}{{ end }}
{{- range .Values.extraEnv }}{{ if hasPrefix "PROXY_API_KEYS" .name }}{{ $keys = true }}{{ end }}{{ end }}
{{- if not $keys }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The fewest proxy pods the release runs: the HPA's minimum, else replicaCount. The
PodDisruptionBudget is rendered only when a drain can still evict a pod: a budget of
minAvailable 1 over a single replica would block every node drain (issue #19's review, L6).
*/}}
{{- define "ollama-openai-bridge.pdbSatisfiable" -}}
{{- $floor := int64 (ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled) }}
{{- $budget := .Values.podDisruptionBudget }}
{{- if not (kindIs "invalid" $budget.maxUnavailable) }}true
{{- else if kindIs "string" $budget.minAvailable }}{{ if gt $floor 1 }}true{{ end }}
{{- else if gt $floor (int64 $budget.minAvailable) }}true
{{- end }}
{{- end }}

{{- define "ollama-openai-bridge.metricsEnabled" -}}
{{- $on := .Values.config.ENABLE_METRICS }}
{{- if or (kindIs "invalid" $on) (eq (toString $on) "true") }}true{{ end }}
{{- end }}

{{/* Redis's own name label, so that the proxy's selector never matches its pods. */}}
{{- define "ollama-openai-bridge.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ollama-openai-bridge.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ollama-openai-bridge.redisLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ollama-openai-bridge.redisSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
