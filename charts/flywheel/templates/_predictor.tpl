{{/* Predictor settings shared by the Deployment and the InferenceService. */}}
{{- define "flywheel.predictorEnv" -}}
{{- $p := .Values.predictor -}}
- name: FLYWHEEL_PREDICTOR_MODEL_REPO
  value: /mnt/models
- name: FLYWHEEL_PREDICTOR_MODEL_NAME
  value: {{ $p.modelName | quote }}
- name: FLYWHEEL_PREDICTOR_MODEL_VERSION
  value: {{ $p.modelVersion | quote }}
- name: FLYWHEEL_PREDICTOR_VARIANT
  value: {{ $p.variant | quote }}
- name: FLYWHEEL_PREDICTOR_PROVIDERS
  value: {{ $p.providers | quote }}
- name: FLYWHEEL_PREDICTOR_HTTP_PORT
  value: "8080"
- name: FLYWHEEL_PREDICTOR_WORKERS
  value: {{ $p.workers | quote }}
{{- with include "flywheel.modelSigningEnv" . | trim }}
{{ . }}
{{- end }}
{{- end -}}

{{/* Resources with the GPU limit added when predictor.gpu.enabled. */}}
{{- define "flywheel.predictorResources" -}}
{{- $p := .Values.predictor -}}
{{- $r := deepCopy $p.resources -}}
{{- if $p.gpu.enabled -}}
{{- $limits := default dict $r.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int $p.gpu.count) -}}
{{- $_ := set $r "limits" $limits -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* nodeSelector, tolerations and runtimeClassName of predictor pods. */}}
{{- define "flywheel.predictorScheduling" -}}
{{- $p := .Values.predictor -}}
{{- $sel := deepCopy $p.nodeSelector -}}
{{- if $p.gpu.enabled -}}{{- $sel = merge $sel $p.gpu.nodeSelector -}}{{- end -}}
{{- with $sel }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $p.gpu.enabled $p.gpu.tolerations }}
tolerations:
{{- range $name, $t := $p.gpu.tolerations }}
  - {{ toYaml $t | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- if and $p.gpu.enabled $p.gpu.runtimeClassName }}
runtimeClassName: {{ $p.gpu.runtimeClassName }}
{{- end }}
{{- end -}}
