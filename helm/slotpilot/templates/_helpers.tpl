{{/*
The chart's name: nameOverride or the chart name, at most 63 characters (a DNS label).
*/}}
{{- define "slotpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name every resource of the release gets: fullnameOverride, or the release name when it
already contains the chart name, else "<release>-<chart>"; truncated to 63 characters
because some Kubernetes name fields are DNS labels.
*/}}
{{- define "slotpilot.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "slotpilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "slotpilot.labels" -}}
helm.sh/chart: {{ include "slotpilot.chart" . }}
{{ include "slotpilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slotpilot
{{- end }}

{{/*
Labels that select the operator's pods (immutable in a Deployment: never add to these).
*/}}
{{- define "slotpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slotpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The ServiceAccount the pods run as: the chart's own, or an existing one when create is false.
*/}}
{{- define "slotpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slotpilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller image, pinned by digest when one is given.
*/}}
{{- define "slotpilot.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The Secret holding the Redis password and its key, or "" when the cluster has none.
Fails when the password's two halves disagree: a Secret without config.cluster.password_env
(the controller would never read it), or password_env without a Secret (it would not start).
*/}}
{{- define "slotpilot.passwordSecretName" -}}
{{- $envName := .Values.config.cluster.password_env }}
{{- if and .Values.redis.existingSecret .Values.redis.password }}
{{- fail "set either redis.existingSecret or redis.password, not both" }}
{{- end }}
{{- $secret := "" }}
{{- if .Values.redis.existingSecret }}
{{- $secret = .Values.redis.existingSecret }}
{{- else if .Values.redis.password }}
{{- $secret = printf "%s-redis" (include "slotpilot.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- if and $secret (not $envName) }}
{{- fail "a Redis password is configured (redis.existingSecret or redis.password): set config.cluster.password_env to the variable the controller reads it from, e.g. REDIS_PASSWORD" }}
{{- end }}
{{- if and $envName (not $secret) }}
{{- fail (printf "config.cluster.password_env is %s but no Secret provides it: set redis.existingSecret (and redis.existingSecretKey) or redis.password, or set config.cluster.password_env to null for a cluster without a password" $envName) }}
{{- end }}
{{- $secret }}
{{- end }}

{{/*
The controller's config file, exactly .Values.config as YAML (the checksum annotation of the
Deployment hashes this text, so any config change rolls the pods).
*/}}
{{- define "slotpilot.configYaml" -}}
{{- $config := deepCopy .Values.config }}
{{- $kubernetes := get $config "kubernetes" | default dict }}
{{- if not (get $kubernetes "lease_name") }}
{{- /* one Lease per release: two releases in a namespace must not share a leader */ -}}
{{- $_ := set $kubernetes "lease_name" (include "slotpilot.fullname" .) }}
{{- end }}
{{- $_ := set $config "kubernetes" $kubernetes }}
{{ toYaml $config }}
{{- end }}

{{/*
A file of the chart (files/alerts.yaml, files/dashboard.json), or a clear failure when the
chart was packaged without it.
*/}}
{{- define "slotpilot.requiredFile" -}}
{{- $content := .root.Files.Get .path }}
{{- if not $content }}
{{- fail (printf "%s is missing from the chart (or empty): it is needed by %s" .path .by) }}
{{- end }}
{{- $content }}
{{- end }}
