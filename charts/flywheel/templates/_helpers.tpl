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

{{/* A Flywheel service image. Call with (dict "ctx" $ "image" .Values.predictor.image "suffix" "").
With image.digest set the reference is repository@sha256:..., pinned to exactly the image that was verified
(the tag and suffix are then ignored). */}}
{{- define "flywheel.image" -}}
{{- $d := .ctx.Values.imageDefaults -}}
{{- $tag := default (default .ctx.Chart.AppVersion $d.tag) .image.tag -}}
{{- $repo := .image.repository -}}
{{- if $d.registry -}}{{- $repo = printf "%s/%s" (trimSuffix "/" $d.registry) $repo -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s%s" $repo $tag (default "" .suffix) -}}
{{- end -}}
{{- end -}}

{{/* A third-party image (Redis, the storage initializer, the test pod): repository:tag, or repository@digest. */}}
{{- define "flywheel.thirdPartyImage" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
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

{{/* extraEnv entries. Two forms: a map (name: value, or name: {valueFrom: ...} for a Secret or ConfigMap
key) rendered in key order, or a list of full EnvVar entries (name plus value or valueFrom) rendered as
written. Credentials belong in valueFrom, never in a plain value. */}}
{{- define "flywheel.extraEnv" -}}
{{- if kindIs "slice" . }}
{{- range . }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- else }}
{{- range $name, $value := . }}
- name: {{ $name }}
{{- if kindIs "map" $value }}
  {{- toYaml $value | nindent 2 }}
{{- else }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* HTTP probes on a service's live/ready paths. Call with (dict "ctx" $ "live" "/health" "ready" "/ready"). */}}
{{- define "flywheel.probes" -}}
{{- $p := .ctx.Values.probes -}}
{{- $port := default "http" .port -}}
{{- $https := and .ctx.Values.tls.enabled (not .plain) -}}
startupProbe:
  httpGet: {path: {{ .ready }}, port: {{ $port }}{{ if $https }}, scheme: HTTPS{{ end }}}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.startupFailureThreshold }}
readinessProbe:
  httpGet: {path: {{ .ready }}, port: {{ $port }}{{ if $https }}, scheme: HTTPS{{ end }}}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ .live }}, port: {{ $port }}{{ if $https }}, scheme: HTTPS{{ end }}}
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
    image: {{ include "flywheel.thirdPartyImage" $s.initializer | quote }}
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

{{- /* The label feed runs where it has the feature data to read and write and a drift service to post to. */}}
{{- define "flywheel.labelFeedRendered" -}}
{{- if and .Values.labelFeed.enabled .Values.features.enabled .Values.drift.enabled }}true{{ end -}}
{{- end -}}

{{- /* The skew check runs where the trainer does (it reads the same feature data and model repository claims) and
there is a drift service whose served rows it checks. */}}
{{- define "flywheel.skewRendered" -}}
{{- if and .Values.skew.enabled .Values.drift.enabled (include "flywheel.trainerRendered" .) }}true{{ end -}}
{{- end -}}

{{- /* The controller acts on RetrainPolicies: it is asked to, and there is a trainer CronJob to make Jobs from. */}}
{{- define "flywheel.controllerRetrains" -}}
{{- if and .Values.controller.enabled .Values.controller.retrain (include "flywheel.trainerRendered" .) }}true{{ end -}}
{{- end -}}

{{- define "flywheel.modelRepoClaim" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "model-repo")) .Values.modelRepo.pvc.claimName -}}
{{- end -}}

{{- define "flywheel.featureDataClaim" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "feature-data")) .Values.features.data.claimName -}}
{{- end -}}

{{/* The Secret holding the in-chart Redis password (key "password"): redis.auth.existingSecret, or the chart's. */}}
{{- define "flywheel.redisAuthSecret" -}}
{{- default (include "flywheel.componentName" (dict "ctx" . "component" "redis-auth")) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* Where a Redis client finds the CA of the in-chart Redis when redis.tls.enabled. */}}
{{- define "flywheel.redisCaDir" -}}/var/run/flywheel/redis-tls{{- end -}}

{{/* REDIS_CONNECTION_STRING for Feast, always from a Secret: the in-chart Redis's password (REDIS_PASSWORD,
a secretKeyRef, which the kubelet substitutes into $(REDIS_PASSWORD)), or the whole string from
redis.externalSecret. No rendered env value ever carries the password. */}}
{{- define "flywheel.redisEnv" -}}
{{- if .Values.redis.enabled -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.redisAuthSecret" . | quote }}
      key: password
- name: REDIS_CONNECTION_STRING
  value: {{ printf "%s:6379,password=$(REDIS_PASSWORD)%s" (include "flywheel.componentName" (dict "ctx" . "component" "redis")) (ternary (printf ",ssl=true,ssl_ca_certs=%s/ca.crt" (include "flywheel.redisCaDir" .)) "" .Values.redis.tls.enabled) | quote }}
{{- else -}}
- name: REDIS_CONNECTION_STRING
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.externalSecret.name is required when redis.enabled is false" .Values.redis.externalSecret.name | quote }}
      key: {{ .Values.redis.externalSecret.key | quote }}
{{- end -}}
{{- end -}}

{{/* The volume and mount of the in-chart Redis's CA for its clients (nothing without redis.tls). */}}
{{- define "flywheel.redisCaVolume" -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled }}
- name: redis-tls
  secret:
    secretName: {{ required "redis.tls.secretName is required when redis.tls.enabled" .Values.redis.tls.secretName | quote }}
    items:
      - {key: ca.crt, path: ca.crt}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "flywheel.redisCaMount" -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled }}
- name: redis-tls
  mountPath: {{ include "flywheel.redisCaDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* TLS between Flywheel services (tls.enabled): one kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) mounted
read-only in every Flywheel pod that serves or calls another over HTTP; flywheel_contracts.tls reads it through
FLYWHEEL_TLS_*: the service answers HTTPS and verifies the services it calls against ca.crt. Not in kserve mode's
InferenceService pods: KServe's own routing and probes speak plain HTTP to them (a mesh's mTLS covers those). */}}
{{- define "flywheel.tlsDir" -}}/var/run/flywheel/tls{{- end -}}
{{- define "flywheel.tlsDnsNames" -}}
{{- $names := list -}}
{{- range $component := list "features" "predictor" "transformer" "drift" "router" "controller" -}}
{{- $name := include "flywheel.componentName" (dict "ctx" $ "component" $component) -}}
{{- $names = append $names $name -}}
{{- $names = append $names (printf "%s.%s.svc" $name $.Release.Namespace) -}}
{{- end -}}
{{- join ", " $names -}}
{{- end -}}
{{- define "flywheel.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: FLYWHEEL_TLS_CERT_FILE
  value: {{ include "flywheel.tlsDir" . }}/tls.crt
- name: FLYWHEEL_TLS_KEY_FILE
  value: {{ include "flywheel.tlsDir" . }}/tls.key
- name: FLYWHEEL_TLS_CA_FILE
  value: {{ include "flywheel.tlsDir" . }}/ca.crt
{{- end }}
{{- end -}}
{{- define "flywheel.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required (printf "tls.secretName is required when tls.enabled: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt whose certificate names %s" (include "flywheel.tlsDnsNames" .)) .Values.tls.secretName | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "flywheel.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "flywheel.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* A client-only pod (kserve mode's transformer) gets the CA alone: it verifies the Flywheel services it calls
and serves plain HTTP to KServe. */}}
{{- define "flywheel.tlsClientEnv" -}}
{{- if .Values.tls.enabled }}
- name: FLYWHEEL_TLS_CA_FILE
  value: {{ include "flywheel.tlsDir" . }}/ca.crt
{{- end }}
{{- end -}}
{{- define "flywheel.tlsCaVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName | quote }}
    items:
      - {key: ca.crt, path: ca.crt}
    defaultMode: 0440
{{- end }}
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
{{ include "flywheel.redisEnv" . }}
- name: FLYWHEEL_FEATURES_FEATURE_SERVICE
  value: {{ .Values.features.featureService | quote }}
- name: FLYWHEEL_FEATURES_REGISTRY_TTL_SECONDS
  value: {{ .Values.features.registryTtlSeconds | quote }}
- name: FLYWHEEL_FEATURES_LOG_LEVEL
  value: {{ .Values.features.logLevel | quote }}
- name: HOME
  value: /tmp
{{- end -}}


{{/* In-cluster URL of a component's Service (https with tls.enabled). */}}
{{- define "flywheel.url" -}}
{{- printf "%s://%s:%d" (ternary "https" "http" .ctx.Values.tls.enabled) (include "flywheel.componentName" (dict "ctx" .ctx "component" .component)) (int .port) -}}
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

{{/* The credential Secrets (key "token"), one per credential of docs/security.md: <credential>.existingSecret,
or the chart's own <fullname>-<credential>-token. Call with (dict "ctx" $ "credential" "drift-ingest"). */}}
{{- define "flywheel.tokenSecret" -}}
{{- $existing := dict
    "router" .ctx.Values.router.auth.existingSecret
    "drift-ingest" .ctx.Values.drift.auth.ingest.existingSecret
    "drift-labels" .ctx.Values.drift.auth.labels.existingSecret
    "drift-skew" .ctx.Values.drift.auth.skew.existingSecret
    "features-read" .ctx.Values.features.auth.read.existingSecret
    "features-write" .ctx.Values.features.auth.write.existingSecret
    "transformer-debug" .ctx.Values.transformer.auth.debug.existingSecret
    "model-signing" .ctx.Values.modelRepo.signing.existingSecret -}}
{{- default (include "flywheel.componentName" (dict "ctx" .ctx "component" (printf "%s-token" .credential))) (get $existing .credential) -}}
{{- end -}}

{{/* A generated credential Secret: random on install, read back with lookup on every upgrade and rollback so
neither side of the credential is locked out. `helm template` cannot look it up and renders a fresh one each
time: rendered-manifest users set the credential's existingSecret. Call with (dict "ctx" $ "credential"
"drift-ingest" "component" "drift" "key" "token"). */}}
{{- define "flywheel.generatedSecret" -}}
{{- $name := include "flywheel.tokenSecret" . }}
{{- $key := default "token" .key }}
{{- if eq .credential "redis-auth" }}{{- $name = include "flywheel.redisAuthSecret" .ctx }}{{- end }}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace $name }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "flywheel.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
type: Opaque
data:
  {{ $key }}: {{ (dig "data" $key "" $existing) | default (randAlphaNum 48 | b64enc) | quote }}
{{- end -}}

{{/* A credential's Secret volume and its read-only mount at /var/run/flywheel/<credential>-token/token.
Call with (dict "ctx" $ "credential" "drift-ingest"). */}}
{{- define "flywheel.tokenVolume" -}}
- name: {{ .credential }}-token
  secret:
    secretName: {{ include "flywheel.tokenSecret" . | quote }}
    defaultMode: 0440
{{- end -}}
{{- define "flywheel.tokenMount" -}}
- name: {{ .credential }}-token
  mountPath: /var/run/flywheel/{{ .credential }}-token
  readOnly: true
{{- end -}}
{{- define "flywheel.tokenPath" -}}/var/run/flywheel/{{ .credential }}-token/token{{- end -}}

{{/* Which credentials the transformer holds: the features read token (to call the feature server) when this
release runs one or one is named, the drift ingest token (to send events) when drift runs or one is named,
its own debug token, and the model signing key (to check the versions it loads) when modelRepo.signing. */}}
{{- define "flywheel.transformerCredentials" -}}
{{- $v := .Values -}}
{{- $c := list "transformer-debug" -}}
{{- if or $v.features.enabled $v.features.auth.read.existingSecret }}{{ $c = append $c "features-read" }}{{ end -}}
{{- if or $v.drift.enabled $v.drift.auth.ingest.existingSecret }}{{ $c = append $c "drift-ingest" }}{{ end -}}
{{- if $v.modelRepo.signing.enabled }}{{ $c = append $c "model-signing" }}{{ end -}}
{{- join " " $c -}}
{{- end -}}

{{/* The model signing key (modelRepo.signing) of the pods that publish (trainer) or load (predictor, drift; the
transformer holds it through flywheel.transformerCredentials) model versions: FLYWHEEL_MODEL_SIGNING_KEY_FILE,
read by flywheel_core.model_repo, and the key's read-only mount; nothing when signing is off. */}}
{{- define "flywheel.modelSigningEnv" -}}
{{- if .Values.modelRepo.signing.enabled }}
- name: FLYWHEEL_MODEL_SIGNING_KEY_FILE
  value: {{ include "flywheel.tokenPath" (dict "credential" "model-signing") }}
{{- end }}
{{- end -}}
{{- define "flywheel.modelSigningVolume" -}}
{{- if .Values.modelRepo.signing.enabled }}
{{ include "flywheel.tokenVolume" (dict "ctx" . "credential" "model-signing") }}
{{- end }}
{{- end -}}
{{- define "flywheel.modelSigningMount" -}}
{{- if .Values.modelRepo.signing.enabled }}
{{ include "flywheel.tokenMount" (dict "credential" "model-signing") }}
{{- end }}
{{- end -}}
