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

{{/*
Where a Deployment's pods may go: its own topologySpreadConstraints when given,
else (spread: true, the default) a soft spread across nodes and zones, so two
replicas land on one node only when nothing else fits and one node's loss (which
no PodDisruptionBudget covers) takes as few pods as it can. Pass (list $ "service" .Values.service).
*/}}
{{- define "otp.topologySpread" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $settings := index . 2 -}}
{{- if $settings.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $settings.topologySpreadConstraints | nindent 2 }}
{{- else if $settings.spread }}
topologySpreadConstraints:
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "otp.selector" (list $ $component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "otp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment the chart sets in the service and the relay (config.env comes after it, from otp.env). */}}
{{- define "otp.commonEnv" -}}
{{- include "otp.checkValues" . }}
- name: NODE_ENV
  value: production
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- include "otp.redisEnv" (list . "") }}
- name: KAFKA_BROKERS
  value: {{ required "config.kafkaBrokers is required" .Values.config.kafkaBrokers | quote }}
{{- include "otp.kafkaEnv" (list . "") }}
{{- include "otp.tracingEnv" . }}
{{- end -}}

{{/*
A container's env: the chart's own entries (`chart`, rendered by the caller),
then the env maps (`maps`: a list of (list "where" map), e.g. config.env then
service.env; a later map's entry replaces an earlier one's, so each name comes
once). An env map naming a variable the chart's entries set fails, naming the
value to set instead: the container would get the name twice, the later entry
would win, and what the chart built around the first (ports, probes, the
drain inside the termination grace period, memory for the workers) would not
hold; a later `helm upgrade` patch removing one duplicate removes both.
Pass (list $ chart maps).
*/}}
{{- define "otp.env" -}}
{{- $chart := trim (index . 1) -}}
{{- $set := dict -}}
{{- range $entry := fromYamlArray $chart }}
{{- if not (kindIs "map" $entry) }}
{{- fail (printf "otp.env: the chart's own env does not parse: %v" $entry) }}
{{- end }}
{{- $_ := set $set $entry.name true }}
{{- end }}
{{- $user := dict -}}
{{- range $m := index . 2 }}
{{- $where := index $m 0 }}
{{- range $name, $value := index $m 1 }}
{{- if hasKey $set $name }}
{{- fail (printf "%s.%s: the chart sets %s itself; %s" $where $name $name (include "otp.envInstead" $name)) }}
{{- end }}
{{- /* A number as written: Helm printed 1000000 as "1e+06", which the service refused at start after
  `helm template` and `helm lint` had passed (probe 100). An unquoted on/off is a YAML boolean, rendered
  "true"/"false", which every on/off setting takes (src/env.ts). */}}
{{- if not (or (kindIs "string" $value) (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) (kindIs "bool" $value) (kindIs "invalid" $value)) }}
{{- fail (printf "%s.%s must be a string or a number, got %s" $where $name (kindOf $value)) }}
{{- end }}
{{- $_ := set $user $name (ternary "" (include "otp.asWritten" $value) (kindIs "invalid" $value)) }}
{{- end }}
{{- end }}
{{- $chart }}
{{- range $name, $value := $user }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The service container's env as the chart sets it. Pass (list $ drainMs). */}}
{{- define "otp.serviceEnv" -}}
{{- $ := index . 0 -}}
- name: GRPC_PORT
  value: {{ $.Values.service.grpcPort | quote }}
- name: HTTP_PORT
  value: {{ $.Values.service.httpPort | quote }}
- name: OTP_HEALTH_PORT
  value: {{ $.Values.service.healthPort | quote }}
- name: OTP_WORKERS
  value: {{ $.Values.service.workers | quote }}
- name: OTP_RELAY
  value: {{ ternary "in-process" "off" $.Values.service.relayInProcess | quote }}
- name: OTP_SHUTDOWN_GRACE_MS
  value: {{ index . 1 | quote }}
- name: OTEL_SERVICE_NAME
  value: otp-service
{{ include "otp.commonEnv" $ }}
{{ include "otp.fileEnv" $ }}
{{- end -}}

{{/*
A value as text the way it was written: a number from a values file is a float64
to Helm, and toString prints 1073741824 or 1000000 as 1.073741824e+09, 1e+06.
Whole floats are printed whole; anything else as toString has it.
*/}}
{{- define "otp.asWritten" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}{{ printf "%.0f" . }}{{ else }}{{ toString . }}{{ end }}
{{- end -}}

{{/*
"true" when a value is a whole number as written: no unit, no leading zero
(`int` reads 030 as octal), at most nine digits (twenty overflowed `int` to 0).
Empty otherwise, for `if not`.
*/}}
{{- define "otp.isWholeNumber" -}}
{{- if regexMatch "^(0|[1-9][0-9]{0,8})$" (include "otp.asWritten" .) }}true{{ end }}
{{- end -}}

{{/*
A Deployment's terminationGracePeriodSeconds: 30 when absent (a
`helm upgrade --reuse-values` from a chart without the value keeps the old
values), else the value as given. Not `default`, which takes 0 for absent and
rendered a grace of 30 where 0 was asked for, instead of refusing it. Pass (list "relay" value).
*/}}
{{- define "otp.terminationSeconds" -}}
{{- $value := index . 1 -}}
{{- if kindIs "invalid" $value }}30
{{- else if not (include "otp.isWholeNumber" $value) }}
{{- fail (printf "%s.terminationGracePeriodSeconds must be a whole number (no unit, no leading zero, under a billion), got %q" (index . 0) (include "otp.asWritten" $value)) }}
{{- else }}{{ int $value }}{{ end }}
{{- end -}}

{{/*
The drain a Deployment without a preStop sleep (the relay, the notifier) gets
in ms: its terminationGracePeriodSeconds less the 5 s exit margin of
src/process.ts and 1 s of slack, so the kubelet's SIGKILL never comes first.
Pass (list "relay" .Values.relay.terminationGracePeriodSeconds).
*/}}
{{- define "otp.drainMs" -}}
{{- $termination := include "otp.terminationSeconds" (list (index . 0) (index . 1)) | int -}}
{{- if lt $termination 7 }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be at least 7: after SIGTERM the process needs a drain of 1 s at least and 5 s to exit" (index . 0) $termination) }}
{{- end }}
{{- if gt $termination 606 }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be at most 606: the drain it leaves (less 6 s) is at most 600 s, which the process refuses past" (index . 0) $termination) }}
{{- end }}
{{- mul (sub $termination 6) 1000 | quote }}
{{- end -}}

{{/* The relay container's env as the chart sets it. */}}
{{- define "otp.relayEnv" -}}
- name: OTEL_SERVICE_NAME
  value: otp-relay
- name: OTP_RELAY_METRICS_PORT
  value: "9465"
- name: OTP_SHUTDOWN_GRACE_MS
  value: {{ include "otp.drainMs" (list "relay" .Values.relay.terminationGracePeriodSeconds) }}
{{ include "otp.commonEnv" . }}
# Only the two keys the relay uses (seals and delivery-record MACs; masked ids in status records):
# not the receipt signing key, the code HMAC keys, the clients file or the listeners' TLS key.
- name: OTP_SEAL_KEYS
  valueFrom:
    secretKeyRef: { name: {{ required "keys.existingSecret is required" .Values.keys.existingSecret | quote }}, key: OTP_SEAL_KEYS }
- name: OTP_DESTINATION_KEY
  valueFrom:
    secretKeyRef: { name: {{ .Values.keys.existingSecret | quote }}, key: OTP_DESTINATION_KEY }
{{- end -}}

{{/* The notifier container's env as the chart sets it. */}}
{{- define "otp.notifierEnv" -}}
- name: NODE_ENV
  value: production
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: NOTIFIER_METRICS_PORT
  value: "9464"
- name: NOTIFIER_SHUTDOWN_GRACE_MS
  value: {{ include "otp.drainMs" (list "notifier" .Values.notifier.terminationGracePeriodSeconds) }}
- name: KAFKA_BROKERS
  value: {{ required "config.kafkaBrokers is required" .Values.config.kafkaBrokers | quote }}
{{ include "otp.kafkaEnv" (list . "notifier") | trim }}
- name: NOTIFIER_GROUP_ID
  value: {{ .Values.notifier.groupId | quote }}
# Delivery claims shared by the replicas, in the service's Redis deployment
# (one node, Cluster or Sentinel), with its WAIT setting.
{{ include "otp.redisEnv" (list . "NOTIFIER_") | trim }}
- name: NOTIFIER_SMS_ADAPTER
  value: {{ .Values.notifier.smsAdapter | quote }}
- name: NOTIFIER_EMAIL_ADAPTER
  value: {{ .Values.notifier.emailAdapter | quote }}
{{- with .Values.notifier.webhookUrl }}
- name: NOTIFIER_WEBHOOK_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.notifier.smtpFrom }}
- name: NOTIFIER_SMTP_FROM
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: otp-notifier
{{ include "otp.tracingEnv" . | trim }}
{{- end -}}

{{/* What to set instead of an env entry naming a variable the chart sets (otp.env). */}}
{{- define "otp.envInstead" -}}
{{- $instead := dict
  "GRPC_PORT" "set service.grpcPort (the container port and the Service follow it)"
  "HTTP_PORT" "set service.httpPort (the container port, the Service and the ServiceMonitor follow it)"
  "OTP_HEALTH_PORT" "set service.healthPort (the container port and the probes follow it)"
  "OTP_WORKERS" "set service.workers (and service.resources: each worker needs its own memory)"
  "OTP_RELAY" "set service.relayInProcess (and relay.enabled)"
  "OTP_SHUTDOWN_GRACE_MS" "it is what the Deployment's terminationGracePeriodSeconds leaves after 6 s (and, for the service, service.preStopSleepSeconds): set service.terminationGracePeriodSeconds or relay.terminationGracePeriodSeconds"
  "NOTIFIER_SHUTDOWN_GRACE_MS" "it is what notifier.terminationGracePeriodSeconds leaves after 6 s: set that"
  "OTP_RELAY_METRICS_PORT" "the relay serves its metrics and health on 9465, which its probe and the PodMonitor use"
  "NOTIFIER_METRICS_PORT" "the notifier serves its metrics and health on 9464, which its probe and the PodMonitor use"
  "OTP_CLIENTS_FILE" "the clients file is key clients.key of clients.existingSecret"
  "TLS_CERT_FILE" "set tls.enabled and tls.existingSecret"
  "TLS_KEY_FILE" "set tls.enabled and tls.existingSecret"
  "TLS_CA_FILE" "set tls.mtls (the CA is ca.crt in tls.existingSecret)"
  "OTP_HEALTHCHECK_CERT_FILE" "set tls.probeClientSecret"
  "OTP_HEALTHCHECK_KEY_FILE" "set tls.probeClientSecret"
  "NODE_ENV" "the chart runs production, always"
  "LOG_LEVEL" "set config.logLevel"
  "REDIS_URL" "set config.redisUrl (or redis.existingSecret)"
  "KAFKA_BROKERS" "set config.kafkaBrokers"
  "OTEL_SERVICE_NAME" "each Deployment's traces are otp-service, otp-relay or otp-notifier; add attributes with OTEL_RESOURCE_ATTRIBUTES"
  "OTEL_EXPORTER_OTLP_ENDPOINT" "set tracing.otlpEndpoint"
  "OTEL_EXPORTER_OTLP_PROTOCOL" "set tracing.protocol"
  "NOTIFIER_GROUP_ID" "set notifier.groupId"
  "NOTIFIER_SMS_ADAPTER" "set notifier.smsAdapter"
  "NOTIFIER_EMAIL_ADAPTER" "set notifier.emailAdapter"
  "NOTIFIER_WEBHOOK_URL" "set notifier.webhookUrl"
  "NOTIFIER_SMTP_FROM" "set notifier.smtpFrom"
-}}
{{- if hasKey $instead . }}
{{- get $instead . }}
{{- else if hasPrefix "REDIS_" . }}
{{- "set it with redis.* (redis.tls, redis.existingSecret)" }}
{{- else if hasPrefix "NOTIFIER_REDIS_" . }}
{{- "set it with redis.* (redis.tls, redis.existingSecret), or give the notifier a Redis of its own in notifier.env" }}
{{- else if hasPrefix "KAFKA_" . }}
{{- "set it with kafka.tls and kafka.sasl" }}
{{- else }}
{{- "remove it from the env map" }}
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
Both also get the Sentinels' own password (redis.sentinelPasswordKey) and TLS
to Redis (redis.tls: the files are in the redis-tls volume, mounted by
otp.volumes and by the notifier when it uses this deployment).
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
{{- if $.Values.redis.sentinelPasswordKey }}
{{- if not (and $env.REDIS_SENTINELS $.Values.redis.existingSecret) }}
{{- fail "redis.sentinelPasswordKey needs config.env.REDIS_SENTINELS and redis.existingSecret (the Secret that holds it)" }}
{{- end }}
- name: {{ $p }}REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ $.Values.redis.existingSecret | quote }}, key: {{ $.Values.redis.sentinelPasswordKey | quote }} }
{{- end }}
{{- $tls := dict }}
{{- with $.Values.redis.tls }}
{{- if .enabled }}
{{- $_ := set $tls "REDIS_TLS" "true" }}
{{- if .existingSecret }}
{{- $_ := set $tls "REDIS_TLS_CA_FILE" "/etc/otp/redis-tls/ca.crt" }}
{{- end }}
{{- if .clientCertificate }}
{{- $_ := set $tls "REDIS_TLS_CERT_FILE" "/etc/otp/redis-tls/tls.crt" }}
{{- $_ := set $tls "REDIS_TLS_KEY_FILE" "/etc/otp/redis-tls/tls.key" }}
{{- end }}
{{- with .serverName }}
{{- $_ := set $tls "REDIS_TLS_SERVERNAME" . }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $value := $tls }}
{{- if not (hasKey $mine (printf "%s%s" $p $name)) }}
- name: {{ $p }}{{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- if $p }}
{{- range $from := list "REDIS_CLUSTER_NODES" "REDIS_SENTINELS" "REDIS_SENTINEL_MASTER" "REDIS_USERNAME" "REDIS_SENTINEL_USERNAME" "REDIS_TLS" "REDIS_TLS_CA_FILE" "REDIS_TLS_CERT_FILE" "REDIS_TLS_KEY_FILE" "REDIS_TLS_SERVERNAME" "OTP_REDIS_WAIT_REPLICAS" "OTP_REDIS_WAIT_TIMEOUT_MS" }}
{{- $to := printf "%s%s" $p (trimPrefix "OTP_" $from) }}
{{- if and (hasKey $env $from) (not (hasKey $mine $to)) }}
- name: {{ $to }}
  value: {{ index $env $from | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
TLS and SASL to Kafka (kafka.*), for the service and the relay (pass (list $ ""))
or the notifier (pass (list $ "notifier"): its own login when kafka.sasl.notifier
names one). The TLS files are in the kafka-tls volume (otp.kafkaTlsMount).
*/}}
{{- define "otp.kafkaEnv" -}}
{{- $ := index . 0 -}}
{{- $who := index . 1 -}}
{{- with $.Values.kafka.tls }}
{{- if .enabled }}
- name: KAFKA_TLS
  value: "on"
{{- if .existingSecret }}
- name: KAFKA_TLS_CA_FILE
  value: /etc/otp/kafka-tls/ca.crt
{{- end }}
{{- if .clientCertificate }}
- name: KAFKA_TLS_CERT_FILE
  value: /etc/otp/kafka-tls/tls.crt
- name: KAFKA_TLS_KEY_FILE
  value: /etc/otp/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- with $.Values.kafka.sasl }}
{{- if .mechanism }}
{{- $login := ternary .notifier (dict "username" .username "existingSecret" .existingSecret "passwordKey" .passwordKey) (and (eq $who "notifier") (not (empty .notifier.username))) }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with kafka.sasl.mechanism" $login.username | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ required "kafka.sasl.existingSecret (the Secret with the Kafka password) is required with kafka.sasl.mechanism" $login.existingSecret | quote }}, key: {{ $login.passwordKey | default "password" | quote }} }
{{- end }}
{{- end }}
{{- end -}}

{{- define "otp.kafkaTlsMount" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/otp/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "otp.kafkaTlsVolume" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret | quote }}
{{- end }}
{{- end -}}

{{- define "otp.tracingEnv" -}}
{{- if .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.tracing.protocol | quote }}
{{- with .Values.tracing.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef: { name: {{ . | quote }}, key: {{ $.Values.tracing.headersKey | quote }} }
{{- end }}
{{- end }}
{{- end -}}

{{/*
Where the credentials of a URL-valued setting go instead of the URL (the
Secret route the chart has for it): for a URL with a password, refused by
otp.checkValues. Pass the variable's name.
*/}}
{{- define "otp.urlSecretRoute" -}}
{{- if eq . "REDIS_URL" }}
{{- "put the URL in a Secret and name it in redis.existingSecret (the URL under its redis.urlKey, REDIS_URL by default)" }}
{{- else if eq . "NOTIFIER_REDIS_URL" }}
{{- "keep the URL without the password and put NOTIFIER_REDIS_PASSWORD in the Secret named by notifier.existingSecret" }}
{{- else if eq . "NOTIFIER_WEBHOOK_URL" }}
{{- "keep the URL without credentials (the webhook adapter's fetch refuses a URL holding them) and put the gateway's bearer token in the Secret named by notifier.existingSecret, as NOTIFIER_WEBHOOK_TOKEN" }}
{{- else if eq . "NOTIFIER_SMTP_URL" }}
{{- "put NOTIFIER_SMTP_URL in the Secret named by notifier.existingSecret" }}
{{- else if hasPrefix "OTEL_EXPORTER_OTLP_" . }}
{{- "keep the endpoint without credentials and give them as OTEL_EXPORTER_OTLP_HEADERS (e.g. authorization=Basic <base64 of user:password>) in the Secret named by tracing.headersSecret" }}
{{- else }}
{{- "put it in a Secret (redis.existingSecret, notifier.existingSecret, tracing.headersSecret), not in the values" }}
{{- end }}
{{- end -}}

{{/*
Values the chart refuses, each with the setting to change: secrets written as
literals (they would sit in the pod spec; they come from the Secrets the values
name: an env entry with a secret's name, or any URL the chart renders into env
holding a password), notifier settings where the notifier never reads them, a
release where nothing publishes the outbox, and Redis TLS files named both by
redis.tls and by hand.
*/}}
{{- define "otp.checkValues" -}}
{{- $withPassword := "://[^/@]*:[^/@]+@" }}
{{- /* An HTTP endpoint's credentials in any form: user:password@, token@, or a secret-named query parameter. */}}
{{- /* A parameter named for a secret, alone or as the last word of its name (api_key, X-Amz-Signature), not inside another word (design, monkey). */}}
{{- $httpCredentials := "(?i)(^[a-z][a-z0-9+.-]*://[^/?#]*@)|([?&]([^=&#]*[_.-])?(key|apikey|token|secret|password|passwd|pass|pwd|signature|sig|auth|credentials?)=)" }}
{{- range $where, $env := dict "config.env" .Values.config.env "service.env" .Values.service.env "relay.env" .Values.relay.env "notifier.env" .Values.notifier.env }}
{{- range $name, $value := $env }}
{{- if regexMatch "(PASSWORD|TOKEN|_KEYS?|HEADERS)$" $name }}
{{- fail (printf "%s.%s is a secret: put it in a Secret (redis.existingSecret, keys.existingSecret, notifier.existingSecret, tracing.headersSecret), not in the values" $where $name) }}
{{- end }}
{{- if eq $name "OTP_TEST_DESTINATIONS" }}
{{- fail (printf "%s.%s holds fixed codes, each a shared secret (whoever has one verifies that destination as its owner; it would sit in the pod spec): put it in the Secret keys.existingSecret names, which the service loads whole" $where $name) }}
{{- end }}
{{- if regexMatch $withPassword (toString $value) }}
{{- fail (printf "%s.%s holds a URL with a password (it would sit in the pod spec): %s" $where $name (include "otp.urlSecretRoute" $name)) }}
{{- end }}
{{- if and (regexMatch "(WEBHOOK_URL|OTLP(_[A-Z]+)*_ENDPOINT)$" $name) (regexMatch $httpCredentials (toString $value)) }}
{{- fail (printf "%s.%s holds credentials in the URL (it would sit in the pod spec): %s" $where $name (include "otp.urlSecretRoute" $name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Every URL-valued value the chart renders into a container's env, with the variable it becomes. */}}
{{- range $value := list (list "config.redisUrl" .Values.config.redisUrl "REDIS_URL") (list "notifier.webhookUrl" .Values.notifier.webhookUrl "NOTIFIER_WEBHOOK_URL") (list "tracing.otlpEndpoint" .Values.tracing.otlpEndpoint "OTEL_EXPORTER_OTLP_ENDPOINT") }}
{{- if regexMatch $withPassword (toString (index $value 1)) }}
{{- fail (printf "%s holds a URL with a password (it would sit in the pod spec as %s): %s" (index $value 0) (index $value 2) (include "otp.urlSecretRoute" (index $value 2))) }}
{{- end }}
{{- /* A Redis URL's user alone is an ACL user name, not a secret; an HTTP endpoint has none of its own. */}}
{{- if and (ne (index $value 2) "REDIS_URL") (regexMatch $httpCredentials (toString (index $value 1))) }}
{{- fail (printf "%s holds credentials in the URL (it would sit in the pod spec as %s): %s" (index $value 0) (index $value 2) (include "otp.urlSecretRoute" (index $value 2))) }}
{{- end }}
{{- end }}
{{- range $component := list "relay" "notifier" }}
{{- $ready := index $.Values $component "minReadySeconds" }}
{{- if and (index $.Values $component).enabled (not (include "otp.isWholeNumber" $ready)) }}
{{- fail (printf "%s.minReadySeconds must be a whole number of seconds (0 or more, no leading zero), got %q: anything else turned the rollout check off" $component (include "otp.asWritten" $ready)) }}
{{- end }}
{{- end }}
{{- /* Whole numbers the templates compute with: `int` reads any other text as 0, so "5s" turned the preStop sleep off, "two" replicas read as 0, and a grace period of "60s" was refused as "(0)" (probe 76). Absent is left to each template's default. */}}
{{- $numbers := list (list "service.replicas" .Values.service.replicas) (list "service.healthPort" .Values.service.healthPort) (list "service.autoscaling.minReplicas" .Values.service.autoscaling.minReplicas) (list "service.autoscaling.maxReplicas" .Values.service.autoscaling.maxReplicas) (list "service.autoscaling.targetCPUUtilizationPercentage" .Values.service.autoscaling.targetCPUUtilizationPercentage) (list "service.preStopSleepSeconds" .Values.service.preStopSleepSeconds) (list "service.terminationGracePeriodSeconds" .Values.service.terminationGracePeriodSeconds) }}
{{- /* A disabled relay or notifier renders nothing: its values are not checked. */}}
{{- range $component := list "relay" "notifier" }}
{{- if (index $.Values $component).enabled }}
{{- $numbers = concat $numbers (list (list (printf "%s.replicas" $component) (index $.Values $component).replicas) (list (printf "%s.terminationGracePeriodSeconds" $component) (index $.Values $component).terminationGracePeriodSeconds)) }}
{{- end }}
{{- end }}
{{- range $check := $numbers }}
{{- $value := index $check 1 }}
{{- if and (not (kindIs "invalid" $value)) (not (include "otp.isWholeNumber" $value)) }}
{{- fail (printf "%s must be a whole number (no unit, no leading zero, under a billion), got %q" (index $check 0) (include "otp.asWritten" $value)) }}
{{- end }}
{{- end }}
{{- range $component := list "service" "relay" "notifier" }}
{{- $pdb := ternary (index $.Values $component "podDisruptionBudget" | default dict) dict (or (eq $component "service") (index $.Values $component).enabled) }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) }}
{{- fail (printf "%s.podDisruptionBudget.minAvailable is not set: a whole number or a percentage (e.g. 1, 50%%), or set %s.podDisruptionBudget.enabled=false" $component $component) }}
{{- end }}
{{- if and $pdb.enabled (not (regexMatch "^(0|[1-9][0-9]{0,8})%?$" (include "otp.asWritten" $pdb.minAvailable))) }}
{{- fail (printf "%s.podDisruptionBudget.minAvailable must be a whole number or a percentage (e.g. 50%%), got %q" $component (include "otp.asWritten" $pdb.minAvailable)) }}
{{- end }}
{{- end }}
{{- /* Values the programs would refuse at start-up (every pod crash-looping): refused here, in their words. */}}
{{- with .Values.tracing }}
{{- if not (has (toString .protocol) (list "http/protobuf" "http/json")) }}
{{- fail (printf "tracing.protocol must be http/protobuf or http/json (OTLP over gRPC is not built in: point tracing.otlpEndpoint at the collector's OTLP/HTTP port, usually 4318), got %q" (toString .protocol)) }}
{{- end }}
{{- if and .otlpEndpoint (not (regexMatch "^https?://[^/?#]+" (toString .otlpEndpoint))) }}
{{- fail "tracing.otlpEndpoint must be an http:// or https:// URL of the collector's OTLP/HTTP receiver (e.g. http://otel-collector:4318)" }}
{{- end }}
{{- end }}
{{- if not (has (toString .Values.config.logLevel) (list "fatal" "error" "warn" "info" "debug" "trace" "silent")) }}
{{- fail (printf "config.logLevel must be one of fatal, error, warn, info, debug, trace, silent, got %q" (toString .Values.config.logLevel)) }}
{{- end }}
{{- $workers := toString .Values.service.workers }}
{{- if not (and (regexMatch "^[0-9]+$" $workers) (ge (atoi $workers) 1) (le (atoi $workers) 256)) }}
{{- fail (printf "service.workers must be a whole number from 1 to 256 (OTP_WORKERS per pod), got %q" $workers) }}
{{- end }}
{{- range $port := list "grpcPort" "httpPort" }}
{{- $value := toString (index $.Values.service $port) }}
{{- if not (and (regexMatch "^[0-9]+$" $value) (ge (atoi $value) 1) (le (atoi $value) 65535)) }}
{{- fail (printf "service.%s must be a port (1-65535), got %q" $port $value) }}
{{- end }}
{{- end }}
{{- if contains "@" (toString .Values.config.kafkaBrokers) }}
{{- fail "config.kafkaBrokers holds credentials (it would sit in the pod spec as KAFKA_BROKERS): brokers are host:port; set the login with kafka.sasl (username in the values, the password in the Secret named by kafka.sasl.existingSecret)" }}
{{- end }}
{{- with .Values.config.kafkaBrokers }}
{{- range $i, $entry := splitList "," (toString .) }}
{{- $port := atoi (regexFind "[0-9]+$" (trim $entry)) }}
{{- if not (and (regexMatch "^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$" (trim $entry)) (ge $port 1) (le $port 65535)) }}
{{- fail (printf "config.kafkaBrokers entry %d must be host:port (e.g. kafka-0.kafka:9092)" (add1 $i)) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* config.env reaches the service and the relay, service.env / relay.env theirs: the notifier reads none of them. */}}
{{- range $where, $env := dict "config.env" .Values.config.env "service.env" .Values.service.env "relay.env" .Values.relay.env }}
{{- range $name, $value := $env }}
{{- if hasPrefix "NOTIFIER_" $name }}
{{- fail (printf "%s.%s: %s reaches the %s, never the notifier, and nothing there reads NOTIFIER_* settings; set it in notifier.env" $where $name $where (ternary "service and the relay" (trimSuffix ".env" $where) (eq $where "config.env"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or .Values.relay.enabled .Values.service.relayInProcess) }}
{{- fail "relay.enabled=false with service.relayInProcess=false: nothing would publish the outbox and no code would be delivered; keep the relay Deployment or set service.relayInProcess=true" }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if and .clientCertificate (not (and .enabled .existingSecret)) }}
{{- fail "kafka.tls.clientCertificate needs kafka.tls.enabled and kafka.tls.existingSecret (the Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .existingSecret (not .enabled) }}
{{- fail "kafka.tls.existingSecret is set but kafka.tls.enabled is false" }}
{{- end }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if and .mechanism (not (has (lower .mechanism) (list "plain" "scram-sha-256" "scram-sha-512"))) }}
{{- fail (printf "kafka.sasl.mechanism must be plain, scram-sha-256 or scram-sha-512, got %q" .mechanism) }}
{{- end }}
{{- if and (not .mechanism) (or .username .existingSecret .notifier.username) }}
{{- fail "kafka.sasl.username / existingSecret are set but kafka.sasl.mechanism is not" }}
{{- end }}
{{- if and .notifier.username (not .notifier.existingSecret) }}
{{- fail "kafka.sasl.notifier.username needs kafka.sasl.notifier.existingSecret (the Secret with its password)" }}
{{- end }}
{{- if and .notifier.existingSecret (not .notifier.username) }}
{{- fail "kafka.sasl.notifier.existingSecret needs kafka.sasl.notifier.username (without it the notifier would log in as the service)" }}
{{- end }}
{{- end }}
{{- range $where, $env := dict "config.env" .Values.config.env "service.env" .Values.service.env "relay.env" .Values.relay.env "notifier.env" .Values.notifier.env }}
{{- range $name, $value := $env }}
{{- if or (hasPrefix "KAFKA_TLS" $name) (hasPrefix "KAFKA_SASL" $name) }}
{{- fail (printf "%s.%s: set Kafka TLS and SASL with kafka.tls and kafka.sasl" $where $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The Redis deployment is the release's, not one component's: the service and the relay must use the same one. */}}
{{- range $where, $env := dict "service.env" .Values.service.env "relay.env" .Values.relay.env }}
{{- range $name := list "REDIS_URL" "REDIS_CLUSTER_NODES" "REDIS_SENTINELS" "REDIS_SENTINEL_MASTER" }}
{{- if hasKey $env $name }}
{{- fail (printf "%s.%s: the Redis deployment is the release's (config.redisUrl, redis.existingSecret, or config.env.REDIS_CLUSTER_NODES / REDIS_SENTINELS): the service and the relay must use the same one" $where $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.config.env.REDIS_CLUSTER_NODES .Values.config.env.REDIS_SENTINELS }}
{{- fail "config.env.REDIS_CLUSTER_NODES and config.env.REDIS_SENTINELS are both set: choose one Redis deployment" }}
{{- end }}
{{- with .Values.tls }}
{{- if and (or .mtls .existingSecret .probeClientSecret) (not .enabled) }}
{{- fail "tls.mtls / tls.existingSecret / tls.probeClientSecret are set but tls.enabled is false: the listeners would serve plaintext without client certificates; set tls.enabled=true" }}
{{- end }}
{{- end }}
{{- with .Values.service.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail (printf "service.autoscaling.minReplicas (%v) is above maxReplicas (%v)" .minReplicas .maxReplicas) }}
{{- end }}
{{- end }}
{{- /* README "Memory and CPU per process": about 400 MiB per worker, plus ~90 MiB for the primary when there are several. */}}
{{- $workers := int .Values.service.workers }}
{{- $limit := include "otp.asWritten" (dig "limits" "memory" "" (.Values.service.resources | default dict)) }}
{{- if and (gt $workers 1) $limit }}
{{- /* A Kubernetes quantity in any of its forms (512Mi, 0.5Gi, 1000M, 1e9, 536870912), in MiB: the check was skipped for all but whole Mi and Gi (probe 76). */}}
{{- if not (regexMatch "^\\+?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$" $limit) }}
{{- fail (printf "service.resources.limits.memory must be a Kubernetes quantity (e.g. 1Gi, 900Mi), got %q" $limit) }}
{{- end }}
{{- $unit := regexFind "(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)$" $limit }}
{{- $perUnit := get (dict "" 1.0 "m" 0.001 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 "E" 1000000000000000000.0) $unit }}
{{- $mib := divf (mulf (float64 (trimPrefix "+" (trimSuffix $unit $limit))) $perUnit) 1048576.0 }}
{{- $needed := add (mul $workers 400) 90 }}
{{- if lt $mib (float64 $needed) }}
{{- fail (printf "service.workers=%d needs about %dMi of memory (400Mi a worker, 90Mi for the primary; README \"Memory and CPU per process\"): service.resources.limits.memory is %s" $workers $needed $limit) }}
{{- end }}
{{- end }}
{{- with .Values.redis.tls }}
{{- if and .clientCertificate (not (and .enabled .existingSecret)) }}
{{- fail "redis.tls.clientCertificate needs redis.tls.enabled and redis.tls.existingSecret (the Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .existingSecret (not .enabled) }}
{{- fail "redis.tls.existingSecret is set but redis.tls.enabled is false" }}
{{- end }}
{{- if .enabled }}
{{- range $where, $env := dict "config.env" $.Values.config.env "service.env" $.Values.service.env "relay.env" $.Values.relay.env }}
{{- range $name, $value := $env }}
{{- if hasPrefix "REDIS_TLS" $name }}
{{- fail (printf "%s.%s and redis.tls are both set: use redis.tls" $where $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether the notifier uses the service's Redis deployment (notifier.env names none of its own). */}}
{{- define "otp.notifierSharesRedis" -}}
{{- $mine := .Values.notifier.env -}}
{{- if not (or (hasKey $mine "NOTIFIER_REDIS_URL") (hasKey $mine "NOTIFIER_REDIS_CLUSTER_NODES") (hasKey $mine "NOTIFIER_REDIS_SENTINELS")) -}}
true
{{- end -}}
{{- end -}}

{{- define "otp.podSecurity" -}}
{{- /* No component calls the Kubernetes API: no token in the pod for an intruder to use. */}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The reference notifier's adapters, given what they need to start: without it
every notifier pod would refuse to start and no code would be delivered.
Checked where the notifier is rendered, after the settings every component needs.
*/}}
{{- define "otp.checkNotifierAdapters" -}}
{{- $adapters := list .Values.notifier.smsAdapter .Values.notifier.emailAdapter }}
{{- $notifierEnv := .Values.notifier.env | default dict }}
{{- if and (has "webhook" $adapters) (not (or .Values.notifier.webhookUrl (hasKey $notifierEnv "NOTIFIER_WEBHOOK_URL"))) }}
{{- fail "notifier.webhookUrl is required with the webhook adapter (notifier.smsAdapter or emailAdapter): where the notifier posts each message (its token goes in notifier.existingSecret); without it every notifier pod would refuse to start. Or set notifier.enabled=false and run a notifier of your own" }}
{{- end }}
{{- if and (has "smtp" $adapters) (not (or .Values.notifier.smtpFrom (hasKey $notifierEnv "NOTIFIER_SMTP_FROM"))) }}
{{- fail "notifier.smtpFrom is required with the smtp adapter: the From address of the emails (NOTIFIER_SMTP_URL goes in notifier.existingSecret); without it every notifier pod would refuse to start. Or set notifier.enabled=false and run a notifier of your own" }}
{{- end }}
{{- end }}
