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

{{/* gateway.yaml: the user's config plus what the chart owns (the socket, the secret's path). */}}
{{- define "ilp.gatewayConfig" -}}
{{- $config := deepCopy .Values.gateway.config -}}
{{- $_ := set $config "listen" (dict "socket" "/var/run/interlink/gateway.sock") -}}
{{- $identity := get $config "identity" -}}
{{- $_ := set $identity "client_secret_file" "/etc/interlink-provider/secret/client-secret" -}}
{{- if .Values.gateway.grants.persistentVolumeClaim -}}
{{- $identities := get $config "identities" | default dict -}}
{{- $_ := set $identities "grants_file" "/var/lib/interlink-gateway/user-grants.json" -}}
{{- $_ := set $config "identities" $identities -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
