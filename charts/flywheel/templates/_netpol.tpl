{{/* A NetworkPolicy admitting ingress to one component's port from the named components of this release.
Call with (dict "ctx" $ "component" "predictor" "port" 8080 "from" (list "transformer")). */}}
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
  policyTypes: [Ingress]
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
{{- end -}}
