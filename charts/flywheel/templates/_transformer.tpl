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
{{- end -}}
