{{/* Transformer settings shared by the Deployment and the InferenceService (the predictor URL differs). */}}
{{- define "flywheel.transformerEnv" -}}
{{- $t := .Values.transformer -}}
- name: FLYWHEEL_TRANSFORMER_HTTP_PORT
  value: "8090"
- name: FLYWHEEL_TRANSFORMER_MODEL_NAME
  value: {{ .Values.predictor.modelName | quote }}
- name: FLYWHEEL_TRANSFORMER_MODEL_VERSION
  value: {{ .Values.predictor.modelVersion | quote }}
- name: FLYWHEEL_TRANSFORMER_MODEL_REPO
  value: /mnt/models
- name: FLYWHEEL_TRANSFORMER_FEATURES_URL
  value: {{ default (include "flywheel.url" (dict "ctx" . "component" "features" "port" 6566)) $t.featuresUrl | quote }}
- name: FLYWHEEL_TRANSFORMER_THRESHOLD
  value: {{ $t.threshold | quote }}
- name: FLYWHEEL_TRANSFORMER_FEATURES_FALLBACK
  value: {{ $t.featuresFallback | quote }}
- name: FLYWHEEL_TRANSFORMER_EVENT_SINK_URL
  value: {{ default (ternary (include "flywheel.url" (dict "ctx" . "component" "drift" "port" 8070)) "" .Values.drift.enabled) $t.eventSinkUrl | quote }}
- name: FLYWHEEL_TRANSFORMER_EVENT_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: FLYWHEEL_TRANSFORMER_DEBUG_FEATURES
  value: {{ $t.debugFeatures | quote }}
{{- $creds := splitList " " (include "flywheel.transformerCredentials" .) }}
- name: FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE
  value: {{ include "flywheel.tokenPath" (dict "credential" "transformer-debug") }}
{{- if has "features-read" $creds }}
- name: FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE
  value: {{ include "flywheel.tokenPath" (dict "credential" "features-read") }}
{{- end }}
{{- if has "drift-ingest" $creds }}
- name: FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE
  value: {{ include "flywheel.tokenPath" (dict "credential" "drift-ingest") }}
{{- end }}
{{- if has "model-signing" $creds }}
- name: FLYWHEEL_MODEL_SIGNING_KEY_FILE
  value: {{ include "flywheel.tokenPath" (dict "credential" "model-signing") }}
{{- end }}
{{- end -}}

{{/* The transformer's credential mounts and volumes (flywheel.transformerCredentials). */}}
{{- define "flywheel.transformerTokenMounts" -}}
{{- range splitList " " (include "flywheel.transformerCredentials" .) }}
{{ include "flywheel.tokenMount" (dict "credential" .) }}
{{- end }}
{{- end -}}
{{- define "flywheel.transformerTokenVolumes" -}}
{{- range splitList " " (include "flywheel.transformerCredentials" .) }}
{{ include "flywheel.tokenVolume" (dict "ctx" $ "credential" .) }}
{{- end }}
{{- end -}}
