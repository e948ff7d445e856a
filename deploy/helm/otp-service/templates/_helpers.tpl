{{- define "otp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otp.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (service, relay, notifier): pass (list $ "component"). */}}
{{- define "otp.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "otp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment shared by the service and the relay. */}}
{{- define "otp.commonEnv" -}}
- name: NODE_ENV
  value: production
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- include "otp.redisEnv" (list . "") }}
- name: KAFKA_BROKERS
  value: {{ required "config.kafkaBrokers is required" .Values.config.kafkaBrokers | quote }}
{{- include "otp.tracingEnv" . }}
{{- range $name, $value := .Values.config.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/*
Where Redis is, for the service and the relay (pass (list $ "")) or for the
notifier's delivery claims (pass (list $ "NOTIFIER_")): the same deployment.
One node: REDIS_URL from redis.existingSecret (it holds the password) or
config.redisUrl. Cluster or Sentinel (config.env.REDIS_CLUSTER_NODES /
REDIS_SENTINELS): those, and the password from redis.existingSecret's
passwordKey. Never both a URL and a cluster or Sentinels: the code refuses
that. The notifier gets the service's other Redis settings from config.env
under its own names (NOTIFIER_REDIS_*, NOTIFIER_REDIS_WAIT_*), unless
notifier.env sets them; when notifier.env names a deployment of its own
(NOTIFIER_REDIS_URL, _CLUSTER_NODES or _SENTINELS), nothing is added.
*/}}
{{- define "otp.redisEnv" -}}
{{- $ := index . 0 -}}
{{- $p := index . 1 -}}
{{- $env := $.Values.config.env -}}
{{- $mine := ternary $.Values.notifier.env (dict) (eq $p "NOTIFIER_") -}}
{{- $many := or $env.REDIS_CLUSTER_NODES $env.REDIS_SENTINELS -}}
{{- if not (or (hasKey $mine "NOTIFIER_REDIS_URL") (hasKey $mine "NOTIFIER_REDIS_CLUSTER_NODES") (hasKey $mine "NOTIFIER_REDIS_SENTINELS")) }}
{{- if and $many $.Values.config.redisUrl }}
{{- fail "config.redisUrl and config.env.REDIS_CLUSTER_NODES / REDIS_SENTINELS are both set: choose one Redis deployment" }}
{{- end }}
{{- if $many }}
{{- if $.Values.redis.existingSecret }}
- name: {{ $p }}REDIS_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ $.Values.redis.existingSecret | quote }}, key: {{ $.Values.redis.passwordKey | quote }} }
{{- end }}
{{- else if $.Values.redis.existingSecret }}
- name: {{ $p }}REDIS_URL
  valueFrom:
    secretKeyRef: { name: {{ $.Values.redis.existingSecret | quote }}, key: {{ $.Values.redis.urlKey | quote }} }
{{- else if $.Values.config.redisUrl }}
- name: {{ $p }}REDIS_URL
  value: {{ $.Values.config.redisUrl | quote }}
{{- else }}
{{- fail "config.redisUrl (or redis.existingSecret, or config.env.REDIS_CLUSTER_NODES / REDIS_SENTINELS) is required" }}
{{- end }}
{{- if $p }}
{{- range $from := list "REDIS_CLUSTER_NODES" "REDIS_SENTINELS" "REDIS_SENTINEL_MASTER" "REDIS_USERNAME" "REDIS_SENTINEL_USERNAME" "REDIS_TLS" "REDIS_TLS_SERVERNAME" "OTP_REDIS_WAIT_REPLICAS" "OTP_REDIS_WAIT_TIMEOUT_MS" }}
{{- $to := printf "%s%s" $p (trimPrefix "OTP_" $from) }}
{{- if and (hasKey $env $from) (not (hasKey $mine $to)) }}
- name: {{ $to }}
  value: {{ index $env $from | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "otp.tracingEnv" -}}
{{- if .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.tracing.protocol | quote }}
{{- end }}
{{- end -}}

{{- define "otp.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
