{{/* Chart name, overridable. */}}
{{- define "flywheel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every resource name: <release>-<chart> unless the release name already holds the chart name. */}}
{{- define "flywheel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "flywheel.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources. Call with (dict "ctx" $ "component" "predictor"). */}}
{{- define "flywheel.componentName" -}}
{{- printf "%s-%s" (include "flywheel.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flywheel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades, so never a version. */}}
{{- define "flywheel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flywheel.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full label set for metadata. Call with (dict "ctx" $ "component" "predictor"). */}}
{{- define "flywheel.labels" -}}
{{ include "flywheel.selectorLabels" . }}
app.kubernetes.io/part-of: flywheel
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "flywheel.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A Flywheel service image. Call with (dict "ctx" $ "image" .Values.predictor.image "suffix" ""). */}}
{{- define "flywheel.image" -}}
{{- $d := .ctx.Values.imageDefaults -}}
{{- $tag := default (default .ctx.Chart.AppVersion $d.tag) .image.tag -}}
{{- $repo := .image.repository -}}
{{- if $d.registry -}}{{- $repo = printf "%s/%s" (trimSuffix "/" $d.registry) $repo -}}{{- end -}}
{{- printf "%s:%s%s" $repo $tag (default "" .suffix) -}}
{{- end -}}

{{/* Pod-level security context: the restricted Pod Security Standard. */}}
{{- define "flywheel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context. */}}
{{- define "flywheel.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Shared pod spec fields: pull secrets, no API token (only the router and the controller talk to the API
server; they set their own service account and token fields, and include flywheel.imagePullSecrets). */}}
{{- define "flywheel.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- include "flywheel.imagePullSecrets" . }}
{{- end -}}

{{/* imagePullSecrets from the name: true map (nothing when none is set). */}}
{{- define "flywheel.imagePullSecrets" -}}
{{- if .Values.imagePullSecrets }}
imagePullSecrets:
{{- range $name, $use := .Values.imagePullSecrets }}
{{- if $use }}
  - name: {{ $name }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* env entries from a name: value map. */}}
{{- define "flywheel.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* HTTP probes on a service's live/ready paths. Call with (dict "ctx" $ "live" "/health" "ready" "/ready"). */}}
{{- define "flywheel.probes" -}}
{{- $p := .ctx.Values.probes -}}
{{- $port := default "http" .port -}}
startupProbe:
  httpGet: {path: {{ .ready }}, port: {{ $port }}}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.startupFailureThreshold }}
readinessProbe:
  httpGet: {path: {{ .ready }}, port: {{ $port }}}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ .live }}, port: {{ $port }}}
  initialDelaySeconds: {{ $p.initialDelaySeconds }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- end -}}

{{/* The model repository volume, mounted read-only at /mnt/models. With source storageUri it is an
emptyDir that flywheel.modelRepoInit fills before the server starts. */}}
{{- define "flywheel.modelRepoVolume" -}}
- name: model-repo
{{- if eq .Values.modelRepo.source "storageUri" }}
  emptyDir:
    sizeLimit: {{ .Values.modelRepo.storageUri.sizeLimit }}
{{- else if eq .Values.modelRepo.source "image" }}
  image:
    reference: {{ required "modelRepo.image.reference is required when modelRepo.source is image" .Values.modelRepo.image.reference }}
    pullPolicy: {{ .Values.modelRepo.image.pullPolicy }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "flywheel.modelRepoClaim" . | quote }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* initContainers of a pod that mounts the model repository: with source storageUri, KServe's storage
initializer copies the repository from object storage into the model-repo emptyDir. The chart adds it
itself, in both modes, instead of leaving it to KServe's pod mutator (which would inject it with no
securityContext, and a namespace enforcing the restricted Pod Security Standard refuses such a pod). */}}
{{- define "flywheel.modelRepoInit" -}}
{{- $s := .Values.modelRepo.storageUri -}}
{{- if eq .Values.modelRepo.source "storageUri" -}}
initContainers:
  - name: storage-initializer
    image: {{ printf "%s:%s" $s.initializer.repository $s.initializer.tag }}
    imagePullPolicy: {{ .Values.imageDefaults.pullPolicy }}
    args:
      - {{ required "modelRepo.storageUri.uri is required when modelRepo.source is storageUri" $s.uri | quote }}
      - /mnt/models
    env:
      - name: HOME
        value: /tmp
    {{- with $s.credentialsSecret }}
    envFrom:
      - secretRef:
          name: {{ . | quote }}
    {{- end }}
    resources:
      {{- toYaml $s.initializer.resources | nindent 6 }}
    securityContext:
      {{- include "flywheel.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      - name: model-repo
        mountPath: /mnt/models
      - name: tmp
        mountPath: /tmp
{{- end -}}
{{- end -}}

{{/* "true" when the trainer CronJob is rendered: it reads the feature data claim and publishes into the
model repository claim, so it needs both (an image volume or an object store copy is read-only). */}}
{{- define "flywheel.trainerRendered" -}}
{{- if and .Values.trainer.enabled .Values.features.enabled (eq .Values.modelRepo.source "pvc") }}true{{ end -}}
{{- end -}}

{{- define "flywheel.modelRepoClaim" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "model-repo")) .Values.modelRepo.pvc.claimName -}}
{{- end -}}

{{- define "flywheel.featureDataClaim" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "feature-data")) .Values.features.data.claimName -}}
{{- end -}}

{{/* REDIS_CONNECTION_STRING for Feast. */}}
{{- define "flywheel.redisConnection" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s:6379" (include "flywheel.componentName" (dict "ctx" . "component" "redis")) -}}
{{- else -}}
{{- required "redis.externalConnectionString is required when redis.enabled is false" .Values.redis.externalConnectionString -}}
{{- end -}}
{{- end -}}

{{/* Environment of the Feast processes (server and materialization). */}}
{{- define "flywheel.featuresEnv" -}}
- name: FLYWHEEL_FEATURES_STORE_YAML
  value: feature_store.cluster.yaml
- name: FLYWHEEL_FEATURES_REPO_PATH
  value: /app/feature_repo
- name: FLYWHEEL_DATA_DIR
  value: /data
- name: FLYWHEEL_REGISTRY_PATH
  value: /data/registry.db
- name: REDIS_CONNECTION_STRING
  value: {{ include "flywheel.redisConnection" . | quote }}
- name: FLYWHEEL_FEATURES_FEATURE_SERVICE
  value: {{ .Values.features.featureService | quote }}
- name: FLYWHEEL_FEATURES_REGISTRY_TTL_SECONDS
  value: {{ .Values.features.registryTtlSeconds | quote }}
- name: FLYWHEEL_FEATURES_LOG_LEVEL
  value: {{ .Values.features.logLevel | quote }}
- name: HOME
  value: /tmp
{{- end -}}

{{/* In-cluster URL of a component's Service. */}}
{{- define "flywheel.url" -}}
{{- printf "http://%s:%d" (include "flywheel.componentName" (dict "ctx" .ctx "component" .component)) (int .port) -}}
{{- end -}}

{{/* In-cluster URL of the transformer: the chart's Service (deployment mode) or the one KServe creates for the
InferenceService's transformer, on port 80 (kserve mode). */}}
{{- define "flywheel.transformerUrl" -}}
{{- if eq .Values.mode "kserve" -}}
{{- printf "http://%s-transformer.%s.svc.cluster.local" (include "flywheel.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- include "flywheel.url" (dict "ctx" . "component" "transformer" "port" 8090) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the router's admin API token (key "token"): router.auth.existingSecret, or the chart's. */}}
{{- define "flywheel.routerTokenSecret" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "router-token")) .Values.router.auth.existingSecret -}}
{{- end -}}

{{/* The ConfigMap the router keeps its routes in. */}}
{{- define "flywheel.routesConfigMap" -}}
{{- include "flywheel.componentName" (dict "ctx" . "component" "routes") -}}
{{- end -}}
