{{/* <namePrefix>-<suffix>: (list . "operator") is remote-agents-operator with the default prefix. */}}
{{- define "remote-agents.name" -}}
{{- printf "%s-%s" (index . 0).Values.namePrefix (index . 1) -}}
{{- end }}

{{/* The labels of every object and the pods' selector, as in manifests/base. */}}
{{- define "remote-agents.labels" -}}
app.kubernetes.io/name: {{ .Values.namePrefix }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "remote-agents.operator" -}}
{{ include "remote-agents.name" (list . "operator") }}
{{- end }}
