{{/* Labels every object of the release carries. */}}
{{- define "ilp.labels" -}}
app.kubernetes.io/name: interlink-provider
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
interlink.provider/node: {{ .Values.nodeName }}
{{- end -}}

{{/* The Secret holding the gateway's client secret. */}}
{{- define "ilp.clientSecretName" -}}
{{- .Values.gateway.clientSecret.existingSecret | default (printf "%s-gateway" .Values.nodeName) -}}
{{- end -}}

{{/* gateway.yaml: the user's config plus what the chart owns (the listeners, the secrets' paths). */}}
{{- define "ilp.gatewayConfig" -}}
{{- $config := deepCopy .Values.gateway.config -}}
{{- $listen := dict "socket" "/var/run/interlink/gateway.sock" -}}
{{- with .Values.gateway.tcp -}}
{{- if .enabled -}}
{{- if not .tls.existingSecret -}}
{{- fail "gateway.tcp.enabled needs gateway.tcp.tls.existingSecret: the interLink API is served off loopback only over HTTPS" -}}
{{- end -}}
{{- if not (or .tls.clientCA .token.existingSecret) -}}
{{- fail "gateway.tcp.enabled needs gateway.tcp.tls.clientCA: true or gateway.tcp.token.existingSecret: anyone reaching the port could create pods as the gateway" -}}
{{- end -}}
{{- $_ := set $listen "host" "0.0.0.0" -}}
{{- $_ := set $listen "port" (int .port) -}}
{{- $_ := set $listen "tls_cert" "/etc/interlink-provider/listen-tls/tls.crt" -}}
{{- $_ := set $listen "tls_key" "/etc/interlink-provider/listen-tls/tls.key" -}}
{{- if .tls.clientCA -}}
{{- $_ := set $listen "client_ca" "/etc/interlink-provider/listen-tls/ca.crt" -}}
{{- end -}}
{{- if .token.existingSecret -}}
{{- $_ := set $listen "token_file" "/etc/interlink-provider/listen-token/token" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "listen" $listen -}}
{{- $identity := get $config "identity" -}}
{{- $_ := set $identity "client_secret_file" "/etc/interlink-provider/secret/client-secret" -}}
{{- if .Values.gateway.grants.persistentVolumeClaim -}}
{{- $identities := get $config "identities" | default dict -}}
{{- $_ := set $identities "grants_file" "/var/lib/interlink-gateway/user-grants.json" -}}
{{- $_ := set $config "identities" $identities -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
