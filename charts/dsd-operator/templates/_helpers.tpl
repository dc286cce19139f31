{{- define "dsd-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dsd-operator.serviceAccountName" -}}
{{- default (include "dsd-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dsd-operator.selectorLabels" -}}
app.kubernetes.io/name: dsd-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dsd-operator.labels" -}}
{{ include "dsd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dsd
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
