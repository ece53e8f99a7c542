{{/* Names, labels and the values every template shares. */}}

{{- define "scantune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scantune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: <fullname>-<component>, 63 characters at most. */}}
{{- define "scantune.componentName" -}}
{{- printf "%s-%s" (include "scantune.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scantune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "scantune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scantune
{{- end -}}

{{/* Labels that select one component's pods: call with (dict "root" $ "component" "api"). */}}
{{- define "scantune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scantune.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "scantune.componentLabels" -}}
{{ include "scantune.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "scantune.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "scantune.apiServiceAccountName" -}}
{{- if .Values.api.serviceAccount.create -}}
{{- default (include "scantune.componentName" (dict "root" . "component" "api")) .Values.api.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.api.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scantune.inferenceServiceAccountName" -}}
{{- if .Values.inference.serviceAccount.create -}}
{{- default (include "scantune.componentName" (dict "root" . "component" "inference")) .Values.inference.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.inference.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scantune.trainerServiceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create -}}
{{- default (include "scantune.componentName" (dict "root" . "component" "trainer")) .Values.trainer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.trainer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespace training Jobs run in. */}}
{{- define "scantune.jobNamespace" -}}
{{- default .Release.Namespace .Values.trainer.namespace -}}
{{- end -}}

{{/* The Secret holding SCANTUNE_DATABASE_URL, SCANTUNE_API_KEYS, ... */}}
{{- define "scantune.secretName" -}}
{{- if .Values.secrets.create -}}
{{- include "scantune.componentName" (dict "root" . "component" "secrets") -}}
{{- else -}}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Secret whose keys become the job pods' environment. */}}
{{- define "scantune.jobEnvSecretName" -}}
{{- if .Values.trainer.envSecret -}}
{{- .Values.trainer.envSecret -}}
{{- else if .Values.secrets.create -}}
{{- include "scantune.componentName" (dict "root" . "component" "job-env") -}}
{{- else -}}
{{- fail "trainer.envSecret is required when secrets.create is false: job pods need the database URL and artifact store" -}}
{{- end -}}
{{- end -}}

{{/* Refuse configurations that would deploy but never work. */}}
{{- define "scantune.validate" -}}
{{- if not .Values.config.artifactUri -}}
{{- fail "config.artifactUri is required: the s3://bucket/prefix that job pods publish to and inference reads from" -}}
{{- end -}}
{{- if and (eq .Values.api.launcher "kubernetes") (not (hasPrefix "s3://" .Values.config.artifactUri)) -}}
{{- fail "config.artifactUri must be s3://... with the kubernetes launcher: job pods cannot write to the API's filesystem" -}}
{{- end -}}
{{- if not (has .Values.api.launcher (list "local" "kubernetes")) -}}
{{- fail "api.launcher must be local or kubernetes" -}}
{{- end -}}
{{- if and (not .Values.secrets.create) (not .Values.secrets.existingSecret) -}}
{{- fail "secrets.existingSecret is required when secrets.create is false" -}}
{{- end -}}
{{- if and .Values.secrets.create (not .Values.secrets.databaseUrl) -}}
{{- fail "secrets.databaseUrl is required (postgresql+psycopg://...): the API replicas and the job pods share one job store" -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context shared by both services. */}}
{{- define "scantune.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "scantune.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* prometheus.io scrape annotations for a port. */}}
{{- define "scantune.metricsAnnotations" -}}
{{- if .root.Values.metrics.annotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* ConfigMap entries both services share (CommonSettings, minus the secret ones). */}}
{{- define "scantune.commonConfig" -}}
SCANTUNE_ARTIFACT_URI: {{ .Values.config.artifactUri | quote }}
{{- with .Values.config.s3EndpointUrl }}
SCANTUNE_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.config.s3Region }}
SCANTUNE_S3_REGION: {{ . | quote }}
AWS_DEFAULT_REGION: {{ . | quote }}
{{- end }}
SCANTUNE_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
SCANTUNE_MAX_UPLOAD_MB: {{ .Values.config.maxUploadMb | quote }}
SCANTUNE_ACCESS_RECHECK_S: {{ .Values.config.accessRecheckS | quote }}
SCANTUNE_AUTH_DISABLED: {{ .Values.config.authDisabled | quote }}
SCANTUNE_RATE_LIMITS: {{ .Values.config.rateLimits | default dict | toJson | quote }}
SCANTUNE_LOG_FORMAT: {{ .Values.config.logFormat | default "json" | quote }}
{{- end -}}

{{/*
The salt of the hashes that stand for study UIDs in audit records: as given; else the one this
release's Secret already holds (an upgrade keeps it, so the hashes stay comparable); else a new
random one, so no release hashes UIDs unsalted (a dictionary of a PACS's UIDs would undo them).
*/}}
{{- define "scantune.auditSalt" -}}
{{- $kept := (lookup "v1" "Secret" .Release.Namespace (include "scantune.secretName" .)).data | default dict -}}
{{- .Values.secrets.auditSalt | default (get $kept "SCANTUNE_AUDIT_SALT" | b64dec) | default (randAlphaNum 32) -}}
{{- end -}}

{{/* Secret entries the API and the job pods share. */}}
{{- define "scantune.secretEnv" -}}
SCANTUNE_DATABASE_URL: {{ .Values.secrets.databaseUrl | quote }}
{{- with .Values.secrets.webhookSecret }}
SCANTUNE_WEBHOOK_SECRET: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.aws.accessKeyId }}
AWS_ACCESS_KEY_ID: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.aws.secretAccessKey }}
AWS_SECRET_ACCESS_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.redisUrl }}
SCANTUNE_REDIS_URL: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.predictionSigningKey }}
SCANTUNE_PREDICTION_SIGNING_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.predictionSigningKeyPrevious }}
SCANTUNE_PREDICTION_SIGNING_KEY_PREVIOUS: {{ . | quote }}
{{- end }}
{{- end -}}


{{/* Egress rules: DNS anywhere in the cluster, then `ports` to egressCidr minus egressExcept. */}}
{{- define "scantune.egressRules" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- if .ports }}
- to:
    - ipBlock:
        cidr: {{ .np.egressCidr }}
        {{- with .np.egressExcept }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}
