{{/* Names, labels and addresses shared by every template of the chart. */}}

{{/* The release's base name; 40 characters at most so "<name>-<n>.<name>-peers" stays a DNS label. */}}
{{- define "raftorch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "raftorch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (list . "orchestrator") or (list . "adapter"). */}}
{{- define "raftorch.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "raftorch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The headless Service giving every replica a stable DNS name. */}}
{{- define "raftorch.peersService" -}}
{{- printf "%s-peers" (include "raftorch.fullname" .) -}}
{{- end -}}

{{/* Stable DNS name of replica n: pass (list . n). */}}
{{- define "raftorch.memberHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "raftorch.fullname" $root) (index . 1 | int) (include "raftorch.peersService" $root) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}

{{/* host:port of every replica's Raft endpoint; each replica removes its own at start. */}}
{{- define "raftorch.raftMembers" -}}
{{- $members := list -}}
{{- range $n := until (.Values.orchestrator.replicas | int) -}}
{{- $members = append $members (printf "%s:%d" (include "raftorch.memberHost" (list $ $n)) ($.Values.orchestrator.raftPort | int)) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{/* Every replica's API URL, for the pods (they hedge heartbeats across them). */}}
{{- define "raftorch.apiURLs" -}}
{{- $urls := list -}}
{{- range $n := until (.Values.orchestrator.replicas | int) -}}
{{- $urls = append $urls (printf "http://%s:%d" (include "raftorch.memberHost" (list $ $n)) ($.Values.orchestrator.apiPort | int)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{- define "raftorch.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "raftorch.fullname" .)) -}}
{{- end -}}

{{- define "raftorch.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "raftorch.fullname" .)) -}}
{{- end -}}

{{- define "raftorch.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}dsn{{- end -}}
{{- end -}}

{{/* A setting's value as environment text: numbers without exponents, booleans as true/false. */}}
{{- define "raftorch.envText" -}}
{{- if kindIs "string" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* Rules between values that values.schema.json cannot express. */}}
{{- define "raftorch.validate" -}}
{{- if and (not .Values.database.dsn) (not .Values.database.existingSecret) -}}
{{- fail "database: set database.dsn (postgresql://user:password@host:5432/db) or database.existingSecret (a Secret holding it)" -}}
{{- end -}}
{{- if and .Values.database.dsn .Values.database.existingSecret -}}
{{- fail "database: set either database.dsn or database.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.serviceMonitor.enabled (empty .Values.networkPolicy.metricsFrom) -}}
{{- fail "networkPolicy.metricsFrom: name your Prometheus pods (namespaceSelector/podSelector) when serviceMonitor.enabled and networkPolicy.enabled, or the network policies block every scrape" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.ingress.enabled (empty .Values.networkPolicy.apiFrom) -}}
{{- fail "networkPolicy.apiFrom: name your ingress controller's pods (namespaceSelector/podSelector) when ingress.enabled and networkPolicy.enabled, or the network policies block the Portal" -}}
{{- end -}}
{{- if and .Values.adapter.autoscaling.enabled (gt (.Values.adapter.autoscaling.minReplicas | int) (.Values.adapter.autoscaling.maxReplicas | int)) -}}
{{- fail (printf "adapter.autoscaling: minReplicas=%v is above maxReplicas=%v" .Values.adapter.autoscaling.minReplicas .Values.adapter.autoscaling.maxReplicas) -}}
{{- end -}}
{{- include "raftorch.validateFixAcceptors" . -}}
{{- end -}}

{{/* The Service of one FIX acceptor: pass (list . name). */}}
{{- define "raftorch.fixService" -}}
{{- printf "%s-fix-%s" (include "raftorch.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{/* fixAcceptors: what the schema cannot say (uniqueness, lengths, combinations). */}}
{{- define "raftorch.validateFixAcceptors" -}}
{{- $seen := dict -}}
{{- range $i, $f := .Values.fixAcceptors -}}
{{- $where := printf "fixAcceptors[%d] (%s)" $i $f.name -}}
{{- range $field := list "name" "adapter" "port" -}}
{{- $key := printf "%s=%v" $field (get $f $field) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "%s: %s %v is already used by %s; each acceptor needs its own" $where $field (get $f $field) (get $seen $key)) -}}
{{- end -}}
{{- $_ := set $seen $key (printf "fixAcceptors[%d]" $i) -}}
{{- end -}}
{{- if eq (int $f.port) (int $.Values.adapter.metricsPort) -}}
{{- fail (printf "%s: port %v is adapter.metricsPort" $where $f.port) -}}
{{- end -}}
{{- $service := include "raftorch.fixService" (list $ $f.name) -}}
{{- if gt (len $service) 63 -}}
{{- fail (printf "%s: its Service name %s has %d characters, at most 63 are allowed: shorten the name (or fullnameOverride)" $where $service (len $service)) -}}
{{- end -}}
{{- $s := $f.service | default dict -}}
{{- $type := $s.type | default "ClusterIP" -}}
{{- if and $s.nodePort (eq $type "ClusterIP") -}}
{{- fail (printf "%s: service.nodePort needs service.type NodePort or LoadBalancer" $where) -}}
{{- end -}}
{{- if and $s.loadBalancerSourceRanges (ne $type "LoadBalancer") -}}
{{- fail (printf "%s: service.loadBalancerSourceRanges needs service.type LoadBalancer" $where) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The acceptors as the pods read them (RAFTORCH_FIX_ACCEPTORS): [{name, adapter, port}]. */}}
{{- define "raftorch.fixAcceptorsEnv" -}}
{{- $items := list -}}
{{- range .Values.fixAcceptors -}}
{{- $items = append $items (dict "name" .name "adapter" .adapter "port" (int .port)) -}}
{{- end -}}
{{- toJson $items -}}
{{- end -}}

{{/* Scheduling of one component: pass (list . "orchestrator" .Values.orchestrator). */}}
{{- define "raftorch.scheduling" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index . 2 -}}
{{- $selector := include "raftorch.selector" (list $root $component) | fromYaml -}}
affinity:
  podAntiAffinity:
    {{- if eq $values.podAntiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {{- toYaml $selector | nindent 12 }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels: {{- toYaml $selector | nindent 14 }}
    {{- end }}
{{- if $root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels: {{- toYaml $selector | nindent 8 }}
  {{- end }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod and container security: non-root, read-only root filesystem, no privilege escalation. */}}
{{- define "raftorch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "raftorch.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}
