{{/* NetworkPolicies: every component admits only its callers (ingress) and reaches only what it calls
(egress), plus DNS. The graph, in one place (docs/security.md draws it):
  router      -> transformer pods of this namespace :8090, the Kubernetes API (its routes ConfigMap)
  transformer -> features :6566, predictor :8080, drift :8070 (or the ports of featuresUrl / eventSinkUrl)
  label-feed, skew -> drift :8070
  controller  -> router admin :8001, drift :8070, the port of controller.prometheusUrl, the Kubernetes API
  features, materialize, trainer -> Redis :6379 (or redis.externalPort anywhere)
  predictor, drift -> nothing (object storage :443 when modelRepo.source is storageUri)
  redis       -> nothing, not even DNS
networkPolicy.extraEgress adds rules per component (drift alert webhooks, an external Prometheus, ...). */}}

{{/* The port of a URL (its explicit port, else 443 for https and 80 otherwise). */}}
{{- define "flywheel.urlPort" -}}
{{- $u := urlParse . -}}
{{- $hp := splitList ":" $u.host -}}
{{- if gt (len $hp) 1 }}{{ last $hp }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end -}}
{{- end -}}

{{/* An egress rule to one component of this release. Call with (dict "ctx" $ "component" "predictor" "port" 8080). */}}
{{- define "flywheel.egressTo" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "flywheel.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 10 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end -}}

{{/* An egress rule to any address on one port (what the chart cannot name: a URL outside the release). */}}
{{- define "flywheel.egressAnywhere" -}}
- ports:
    - port: {{ . }}
      protocol: TCP
{{- end -}}

{{/* The egress rules of one component. Call with (dict "ctx" $ "component" "transformer"). */}}
{{- define "flywheel.egressRules" -}}
{{- $v := .ctx.Values -}}
{{- $n := $v.networkPolicy -}}
{{- $c := .component -}}
{{- if ne $c "redis" }}
# DNS (kube-dns / CoreDNS).
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml $n.dns.namespaceLabels | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml $n.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- if eq $c "transformer" }}
{{- if $v.transformer.featuresUrl }}
{{ include "flywheel.egressAnywhere" (include "flywheel.urlPort" $v.transformer.featuresUrl) }}
{{- else if $v.features.enabled }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "features" "port" 6566) }}
{{- end }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "predictor" "port" 8080) }}
{{- if $v.transformer.eventSinkUrl }}
{{ include "flywheel.egressAnywhere" (include "flywheel.urlPort" $v.transformer.eventSinkUrl) }}
{{- else if $v.drift.enabled }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "drift" "port" 8070) }}
{{- end }}
{{- else if eq $c "router" }}
# The transformers it routes to: this release's and the candidates' (other releases in this namespace).
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/component: transformer
  ports:
    - port: 8090
      protocol: TCP
{{- include "flywheel.egressKubernetesApi" .ctx }}
{{- else if eq $c "controller" }}
{{- if $v.router.enabled }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "router" "port" 8001) }}
{{- end }}
{{- if $v.drift.enabled }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "drift" "port" 8070) }}
{{- end }}
{{- with $v.controller.prometheusUrl }}
{{ include "flywheel.egressAnywhere" (include "flywheel.urlPort" .) }}
{{- end }}
{{- include "flywheel.egressKubernetesApi" .ctx }}
{{- else if has $c (list "label-feed" "skew") }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "drift" "port" 8070) }}
{{- else if has $c (list "features" "materialize" "trainer") }}
{{- if $v.redis.enabled }}
{{ include "flywheel.egressTo" (dict "ctx" .ctx "component" "redis" "port" 6379) }}
{{- else }}
{{ include "flywheel.egressAnywhere" $v.redis.externalPort }}
{{- end }}
{{- end }}
{{- if and (has $c (list "predictor" "transformer" "drift")) (eq $v.modelRepo.source "storageUri") }}
# The storage initializer copies the model repository from object storage.
{{ include "flywheel.egressAnywhere" 443 }}
{{- end }}
{{- range $name, $rule := (get $n.extraEgress $c | default dict) }}
# networkPolicy.extraEgress.{{ $c }}.{{ $name }}
- {{ toYaml $rule | nindent 2 | trim }}
{{- end }}
{{- end -}}

{{/* Egress to the Kubernetes API server (networkPolicy.kubernetesApi: its address differs per cluster). */}}
{{- define "flywheel.egressKubernetesApi" }}
# The Kubernetes API server.
- to:
    {{- range $name, $cidr := .Values.networkPolicy.kubernetesApi.cidrs }}
    - ipBlock:
        cidr: {{ $cidr }}
    {{- end }}
  ports:
    {{- range $name, $port := .Values.networkPolicy.kubernetesApi.ports }}
    - port: {{ $port }}
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* The egress half of a policy spec. */}}
{{- define "flywheel.egress" -}}
{{- $rules := include "flywheel.egressRules" . | trim -}}
{{- if $rules }}
egress:
  {{- $rules | nindent 2 }}
{{- else }}
egress: []
{{- end }}
{{- end -}}

{{/* A NetworkPolicy admitting ingress to one component's port from the named components of this release (or
from namespaceLabels, or from anywhere when neither is given; nothing at all with "closed"), and egress by
flywheel.egressRules. Call with (dict "ctx" $ "component" "predictor" "port" 8080 "from" (list "transformer")). */}}
{{- define "flywheel.networkPolicy" -}}
{{- $c := dict "ctx" .ctx "component" .component }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "flywheel.componentName" $c }}
  labels:
    {{- include "flywheel.labels" $c | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "flywheel.selectorLabels" $c | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if .closed }}
  # Nothing calls it (a Job's pod).
  ingress: []
  {{- else }}
  ingress:
    - ports:
        - port: {{ .port }}
          protocol: TCP
      {{- if .from }}
      from:
        {{- range .from }}
        - podSelector:
            matchLabels:
              {{- include "flywheel.selectorLabels" (dict "ctx" $.ctx "component" .) | nindent 14 }}
        {{- end }}
      {{- else if .namespaceLabels }}
      from:
        - namespaceSelector:
            matchLabels:
              {{- toYaml .namespaceLabels | nindent 14 }}
      {{- end }}
    {{- with .ctx.Values.networkPolicy.metricsNamespaceLabels }}
    # Prometheus scrapes /metrics on the same port.
    - ports:
        - port: {{ $.port }}
          protocol: TCP
      from:
        - namespaceSelector:
            matchLabels:
              {{- toYaml . | nindent 14 }}
    {{- end }}
  {{- end }}
  {{- include "flywheel.egress" $c | nindent 2 }}
{{- end -}}
