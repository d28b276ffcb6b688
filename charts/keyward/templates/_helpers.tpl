{{/* Names, labels and the small facts several templates share. */}}

{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keyward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "keyward.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "keyward.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "keyward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keyward.labels" -}}
helm.sh/chart: {{ include "keyward.chart" . }}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: keyward
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "keyward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keyward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keyward.image" -}}
{{- $registry := .Values.image.registry }}
{{- with (.Values.global | default dict).imageRegistry }}{{ $registry = . }}{{ end }}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- if $registry }}{{ $ref = printf "%s/%s" (trimSuffix "/" $registry) $ref }}{{ end }}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{/* The Secret holding the ESC token ("" when none): existingSecret, tokenSecret.name, or the chart's own. */}}
{{- define "keyward.escSecretName" -}}
{{- if .Values.esc.existingSecret }}
{{- .Values.esc.existingSecret }}
{{- else if .Values.esc.tokenSecret.name }}
{{- .Values.esc.tokenSecret.name }}
{{- else if .Values.esc.token }}
{{- printf "%s-esc-token" (include "keyward.fullname" .) }}
{{- end }}
{{- end }}

{{- define "keyward.githubSecretName" -}}
{{- default .Values.github.tokenSecret.name .Values.github.existingSecret }}
{{- end }}

{{- define "keyward.leaseName" -}}
{{- default (include "keyward.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Mount points of the files keyward reads. */}}
{{- define "keyward.escTokenPath" -}}/var/run/secrets/keyward/esc/token{{- end }}
{{- define "keyward.githubTokenPath" -}}/var/run/secrets/keyward/github/token{{- end }}
{{- define "keyward.hashKeyPath" -}}/var/run/secrets/keyward/hash-key/key{{- end }}
{{- define "keyward.webhookSecretPath" -}}/var/run/secrets/keyward/webhook/secret{{- end }}
