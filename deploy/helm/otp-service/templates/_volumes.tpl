{{/* Files the service reads: the clients file and, with TLS, the certificates. */}}
{{- define "otp.fileEnv" -}}
- name: OTP_CLIENTS_FILE
  value: /etc/otp/clients/{{ .Values.clients.key }}
{{- if .Values.tls.enabled }}
- name: TLS_CERT_FILE
  value: /etc/otp/tls/tls.crt
- name: TLS_KEY_FILE
  value: /etc/otp/tls/tls.key
{{- if .Values.tls.mtls }}
- name: TLS_CA_FILE
  value: /etc/otp/tls/ca.crt
{{- if .Values.tls.probeClientSecret }}
- name: OTP_HEALTHCHECK_CERT_FILE
  value: /etc/otp/probe/tls.crt
- name: OTP_HEALTHCHECK_KEY_FILE
  value: /etc/otp/probe/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "otp.volumeMounts" -}}
- name: clients
  mountPath: /etc/otp/clients
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/otp/tls
  readOnly: true
{{- if and .Values.tls.mtls .Values.tls.probeClientSecret }}
- name: probe-tls
  mountPath: /etc/otp/probe
  readOnly: true
{{- end }}
{{- end }}
{{- include "otp.redisTlsMount" . }}
{{- include "otp.kafkaTlsMount" . }}
{{- end -}}

{{- define "otp.volumes" -}}
- name: clients
  secret:
    secretName: {{ required "clients.existingSecret is required (production refuses to start without OTP_CLIENTS_FILE)" .Values.clients.existingSecret | quote }}
- name: tmp
  # Nothing of ours writes here (a read-only root file system needs a /tmp): bounded, so nothing can fill the node's disk.
  emptyDir: { sizeLimit: 64Mi }
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required when tls.enabled" .Values.tls.existingSecret | quote }}
{{- if and .Values.tls.mtls .Values.tls.probeClientSecret }}
- name: probe-tls
  secret:
    secretName: {{ .Values.tls.probeClientSecret | quote }}
{{- end }}
{{- end }}
{{- include "otp.redisTlsVolume" . }}
{{- include "otp.kafkaTlsVolume" . }}
{{- end -}}

{{/* The relay's: no clients file, no listener certificates (it serves no calls). */}}
{{- define "otp.relayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- include "otp.redisTlsMount" . }}
{{- include "otp.kafkaTlsMount" . }}
{{- end -}}

{{- define "otp.relayVolumes" -}}
- name: tmp
  # Nothing of ours writes here (a read-only root file system needs a /tmp): bounded, so nothing can fill the node's disk.
  emptyDir: { sizeLimit: 64Mi }
{{- include "otp.redisTlsVolume" . }}
{{- include "otp.kafkaTlsVolume" . }}
{{- end -}}

{{/* redis.tls.existingSecret: the CA (and client certificate) for Redis, in every Deployment that uses the service's Redis. */}}
{{- define "otp.redisTlsMount" -}}
{{- if and .Values.redis.tls.enabled .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: /etc/otp/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "otp.redisTlsVolume" -}}
{{- if and .Values.redis.tls.enabled .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret | quote }}
{{- end }}
{{- end -}}
