{{/*
Names and labels shared by every template. Components ("agent", "operator", "cleanup") are passed
as (dict "ctx" $ "component" "agent").
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "kube-l2tp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: fullnameOverride, or release-chart (the release alone if it contains the chart's name). */}}
{{- define "kube-l2tp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's objects: <fullname>-<suffix>, at most 63 characters. */}}
{{- define "kube-l2tp.componentName" -}}
{{- $base := include "kube-l2tp.fullname" .ctx | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base .suffix }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label (never on pod templates). */}}
{{- define "kube-l2tp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select one component's pods; never change them (selectors are immutable). */}}
{{- define "kube-l2tp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-l2tp.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object except pod templates: these may change with the chart's version. */}}
{{- define "kube-l2tp.labels" -}}
helm.sh/chart: {{ include "kube-l2tp.chart" .ctx }}
{{ include "kube-l2tp.selectorLabels" . }}
app.kubernetes.io/part-of: kube-l2tp
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of a pod template: the selector labels and the user's, nothing that depends on the chart's
version, so upgrading the chart alone does not restart the agents (and their pseudowires' owners).
*/}}
{{- define "kube-l2tp.podLabels" -}}
{{ include "kube-l2tp.selectorLabels" . }}
app.kubernetes.io/part-of: kube-l2tp
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with .podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The one image both components run: registry/repository:tag, or @digest when set. */}}
{{- define "kube-l2tp.image" -}}
{{- $image := .Values.image }}
{{- $ref := $image.repository }}
{{- if $image.registry }}
{{- $ref = printf "%s/%s" $image.registry $image.repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $ref $image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The DNS name the API server uses to reach the operator's admission webhook. */}}
{{- define "kube-l2tp.webhookHost" -}}
{{- printf "%s.%s.svc" (include "kube-l2tp.componentName" (dict "ctx" . "suffix" "webhook")) .Release.Namespace }}
{{- end }}
