#!/usr/bin/env bash
# Offline validation of deploy/: what `make lint-deploy` (and so `make lint`, and CI) runs.
#
#   1. Prometheus rules:   promtool check rules + promtool test rules (the alerts' unit tests),
#                          and promtool check config on the example scrape config.
#   2. Grafana dashboard:  the JSON parses (python -m json.tool); its structure, variables and
#                          panels are the expected ones; every contract metric is on it; every
#                          query parses as PromQL (promtool).
#   3. Kubernetes:         every manifest against the Kubernetes OpenAPI schemas, offline
#                          (kubernetes-validate from PyPI ships them), for the newest and the
#                          oldest Kubernetes we support; then what a schema cannot see: selectors,
#                          Service/HPA/PDB targets, probes, ports, annotations, the ConfigMap.
#   4. The ConfigMap's TOML against deploy/imagegate.example.toml (no key lost or drifted).
#   5. Dockerfile:         the stages, the non-root user, the entrypoint, and that what it
#                          COPYs exists.
#   6. Live:               `imagegate compute` and `imagegate bff` (debug build) started on free
#                          loopback ports *with the ConfigMap's config*, their /metrics scraped and
#                          checked with `promtool check metrics` and for the contract's families.
#
# Idempotent; installs what it needs if missing (Debian's prometheus package for promtool, as
# root; a Python venv with kubernetes-validate under ~/.cache). Exits non-zero on any failure.
#
#   scripts/lint-deploy.sh                      run every check
#   scripts/lint-deploy.sh install-prometheus   only install promtool/prometheus (make deps)

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KUBE_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests must be valid for: the newest schema shipped and the
# oldest release we support (native gRPC probes are GA since 1.27).
KUBE_VERSIONS=(1.37.0 1.29.0)
VENV=${IMAGEGATE_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate/lint-deploy-venv}

say() { printf '==> %s\n' "$*"; }
fail() {
  printf '\nlint-deploy: FAILED: %s\n' "$*" >&2
  exit 1
}

# ----------------------------------------------------------------------------- installs

# Debian's prometheus package brings promtool and the prometheus server (which
# tests/it/prometheus_scrape.rs starts). Its postinst would start a system service on :9090;
# containers usually forbid that (policy-rc.d), but make sure none is left running.
install_prometheus() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    fail "promtool/prometheus missing and cannot install them (need root and apt-get): apt-get install -y prometheus"
  fi
  say "installing Debian's prometheus package (promtool + server)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
      fail "apt-get install prometheus failed"
  fi
  stop_system_prometheus
  command -v promtool >/dev/null 2>&1 || fail "prometheus installed but promtool is not on PATH"
}

# Stops and disables the package's own service, if its installation started one.
stop_system_prometheus() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    say "stopping the prometheus system service the package started"
    systemctl stop prometheus || true
    systemctl disable prometheus >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    say "stopping the prometheus init.d service the package started"
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -x /etc/init.d/prometheus ]; then
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  if command -v ss >/dev/null 2>&1 && ss -ltnpH 'sport = :9090' 2>/dev/null | grep -q '"prometheus"'; then
    fail "a prometheus service still listens on :9090 after the install; stop it (systemctl stop prometheus)"
  fi
}

install_validator() {
  if [ -x "$VENV/bin/kubernetes-validate" ] &&
    [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" = "$KUBE_VALIDATE_VERSION" ]; then
    return 0
  fi
  say "installing kubernetes-validate==$KUBE_VALIDATE_VERSION into $VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-venv >/dev/null 2>&1; } || true
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" || fail "python3 -m venv failed (install python3-venv)"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBE_VALIDATE_VERSION" ||
    fail "pip install kubernetes-validate==$KUBE_VALIDATE_VERSION failed"
}

if [ "${1:-}" = install-prometheus ]; then
  install_prometheus
  exit 0
fi
[ $# -eq 0 ] || fail "unknown argument: $1 (usage: scripts/lint-deploy.sh [install-prometheus])"

install_prometheus
install_validator
PY=$VENV/bin/python

# Validation must not need the network: where we may, run it with none at all.
OFFLINE=()
if command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
  OFFLINE=(unshare -n)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imagegate-lint-deploy.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- 1. Prometheus
say "promtool check rules deploy/prometheus/rules.yml"
promtool check rules deploy/prometheus/rules.yml || fail "deploy/prometheus/rules.yml does not pass promtool check rules"

# promtool parses PromQL but knows no metric names: a misspelt one would just match nothing.
say "rules.yml uses only the contract's metrics and the rules it records; every alert has its annotations"
"$PY" - "$WORK/referenced.txt" <<'EOF' || fail "deploy/prometheus/rules.yml: see the problems above"
import re, sys, yaml
CONTRACT = """imagegate_lane_requests_total imagegate_lane_request_duration_seconds imagegate_lane_in_flight
imagegate_lane_queue_wait_seconds imagegate_lane_rejected_total imagegate_lane_limit imagegate_lane_connections
imagegate_lane_bytes_sent_total imagegate_lane_bytes_received_total imagegate_http_requests_total
imagegate_http_request_duration_seconds imagegate_compute_operations_total
imagegate_compute_operation_duration_seconds imagegate_compute_queue_depth
imagegate_config_reloads_total imagegate_lane_limit_bounds""".split()
HISTOGRAMS = [m for m in CONTRACT if m.endswith("_seconds") and "duration" in m or m.endswith("wait_seconds")]
known = set(CONTRACT) | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")} | {"up"}
used = set()
rules = [r for g in yaml.safe_load(open("deploy/prometheus/rules.yml"))["groups"] for r in g["rules"]]
recorded = {r["record"] for r in rules if "record" in r}
problems = []
for r in rules:
    name = r.get("record") or r.get("alert")
    expr = re.sub(r'"[^"]*"', '""', r["expr"])  # label values are not metric names
    for ident in re.findall(r"\b([a-z_][a-z0-9_]*:[a-z0-9_:]+|imagegate_[a-z0-9_]+|up)\b(?!\s*\()", expr):
        if ident not in known and ident not in recorded:
            problems.append(f"{name}: unknown metric or recorded series `{ident}`")
        elif ident.startswith("imagegate_"):
            used.add(ident)
    if "alert" in r:
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            if not ann.get(key):
                problems.append(f"{name}: no `{key}` annotation")
        if "docs/operations.md" not in ann.get("runbook", ""):
            problems.append(f"{name}: the runbook annotation should point to docs/operations.md")
        if r.get("labels", {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{name}: severity label must be warning or critical")
for want in ("ImagegateLaneSaturated", "ImagegateLaneShedding", "ImagegateRealtimeLatencyHigh",
             "ImagegateCircuitOpen", "ImagegateComputeQueueBacklog", "ImagegateBffAbsent", "ImagegateComputeAbsent"):
    if want not in {r.get("alert") for r in rules}:
        problems.append(f"alert {want} is missing")
for p in problems:
    print("  -", p)
print(f"  {len(recorded)} recording rules, {sum('alert' in r for r in rules)} alerts")
# The live scrape below checks that each of these is really exported.
open(sys.argv[1], "a").write("".join(f"rules.yml {m}\n" for m in sorted(used)))
sys.exit(1 if problems else 0)
EOF

say "promtool test rules deploy/prometheus/rules.test.yml"
promtool test rules deploy/prometheus/rules.test.yml || fail "the alert unit tests in deploy/prometheus/rules.test.yml failed"

# Debian builds Prometheus without Kubernetes service discovery, so the example config is
# checked with its kubernetes_sd_configs swapped for a static target: everything else (the
# relabelling, the rule file) is checked as written.
say "promtool check config deploy/prometheus/prometheus.yml (kubernetes_sd swapped for static)"
"$PY" - "$WORK" <<'EOF' || fail "deploy/prometheus/prometheus.yml could not be prepared for checking"
import shutil, sys, yaml
work = sys.argv[1]
with open("deploy/prometheus/prometheus.yml") as f:
    config = yaml.safe_load(f)
for job in config.get("scrape_configs", []):
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
with open(f"{work}/prometheus.yml", "w") as f:
    yaml.safe_dump(config, f, sort_keys=False)
for rule_file in config.get("rule_files", []):
    shutil.copy(f"deploy/prometheus/{rule_file}", f"{work}/{rule_file}")
EOF
promtool check config "$WORK/prometheus.yml" || fail "deploy/prometheus/prometheus.yml does not pass promtool check config"

# ----------------------------------------------------------------------------- 2. Grafana
say "python -m json.tool deploy/grafana/imagegate.json"
"$PY" -m json.tool deploy/grafana/imagegate.json >/dev/null || fail "deploy/grafana/imagegate.json is not valid JSON"

say "dashboard structure, variables, panels and metric coverage"
"$PY" - "$WORK/dashboard-queries.yml" "$WORK/referenced.txt" <<'EOF' || fail "deploy/grafana/imagegate.json: see the problems above"
import json, re, sys
CONTRACT = """imagegate_lane_requests_total imagegate_lane_request_duration_seconds imagegate_lane_in_flight
imagegate_lane_queue_wait_seconds imagegate_lane_rejected_total imagegate_lane_limit imagegate_lane_connections
imagegate_lane_bytes_sent_total imagegate_lane_bytes_received_total imagegate_http_requests_total
imagegate_http_request_duration_seconds imagegate_compute_operations_total
imagegate_compute_operation_duration_seconds imagegate_compute_queue_depth
process_resident_memory_bytes process_cpu_seconds_total""".split()
EXPECTED_PANELS = [
    "In-flight vs limit", "Lane requests by code", "Lane duration p50 / p99", "Queue wait p50 / p99",
    "Rejections by reason", "Connections", "Bytes on the wire", "HTTP requests by status",
    "Compute operations by result", "Compute queue depth", "Compute duration p50 / p99",
    "Resident memory (RSS)", "CPU", "Config reloads by result",
    "Adaptive limit: limit, bounds, compute busy", "Wait in front of compute p50 / p99",
]
LANE_PANELS = EXPECTED_PANELS[:7] + EXPECTED_PANELS[-2:]
# Beyond the contract: what the BFF also exports (live reload, the upload store, process).
EXTRA = """imagegate_config_reloads_total imagegate_store_bytes imagegate_store_objects
imagegate_store_errors_total process_open_fds process_max_fds
imagegate_lane_limit_bounds imagegate_lane_compute_busy imagegate_lane_compute_wait_seconds_bucket
imagegate_lane_pacing_rate_bytes imagegate_lane_path_delay_seconds imagegate_compute_pacing_rate_bytes
imagegate_compute_path_delay_seconds""".split()
problems = []
used = set()
d = json.load(open("deploy/grafana/imagegate.json"))
if not isinstance(d.get("schemaVersion"), int) or not 36 <= d["schemaVersion"] <= 41:
    problems.append(f"schemaVersion {d.get('schemaVersion')!r}: expected 36..41")
for key in ("title", "uid", "panels", "templating", "time"):
    if key not in d:
        problems.append(f"missing top-level key {key!r}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    problems.append("no `datasource` variable of type datasource for Prometheus")
lane = variables.get("lane")
if not lane or lane.get("type") != "query" or "lane" not in json.dumps(lane.get("query")):
    problems.append("no `lane` query variable over the lane label")
panels = []
for p in d.get("panels", []):
    panels.append(p)
    panels.extend(p.get("panels", []))
ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)) or None in ids:
    problems.append(f"panel ids missing or not unique: {ids}")
titles = {p.get("title"): p for p in panels}
for t in EXPECTED_PANELS:
    if t not in titles:
        problems.append(f"expected panel {t!r} is missing")
for t in LANE_PANELS:
    for tgt in titles.get(t, {}).get("targets", []):
        if '$lane' not in tgt.get("expr", ""):
            problems.append(f"panel {t!r}: query does not filter on $lane: {tgt.get('expr')}")
exprs = []
for p in panels:
    if p.get("type") == "row":
        continue
    g = p.get("gridPos", {})
    if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
        problems.append(f"panel {p.get('title')!r}: bad gridPos {g}")
    if p.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"panel {p.get('title')!r}: datasource is not ${{datasource}}")
    if not p.get("targets"):
        problems.append(f"panel {p.get('title')!r}: no queries")
    for tgt in p.get("targets", []):
        if tgt.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p.get('title')!r}: a query's datasource is not ${{datasource}}")
        exprs.append((p.get("title"), tgt.get("expr", "")))
text = " ".join(e for _, e in exprs)
for m in CONTRACT:
    if not re.search(re.escape(m) + r"(_bucket)?\b", text):
        problems.append(f"metric {m} is on no panel")
for title, e in exprs:
    for name in re.findall(r"\b((?:imagegate|process)_[a-z_]+)", e):
        base = re.sub(r"_bucket$", "", name)
        if base not in CONTRACT and name not in EXTRA:
            problems.append(f"panel {title!r}: unknown metric {name}")
        used.add(name)
# Every query as a recording rule, so promtool parses the PromQL (Grafana's macros filled in).
with open(sys.argv[1], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$lane", ".*").replace("$instance", ".*")
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
for p in problems:
    print("  -", p)
print(f"  {len(panels)} panels, {len(exprs)} queries, variables: {', '.join(variables)}")
open(sys.argv[2], "a").write("".join(f"imagegate.json {m}\n" for m in sorted(used)))
sys.exit(1 if problems else 0)
EOF
say "promtool: every dashboard query parses as PromQL"
promtool check rules "$WORK/dashboard-queries.yml" >/dev/null ||
  { promtool check rules "$WORK/dashboard-queries.yml" || true; fail "a dashboard query is not valid PromQL"; }

# ----------------------------------------------------------------------------- 3. Kubernetes
MANIFESTS=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || MANIFESTS+=("$f")
done
[ ${#MANIFESTS[@]} -gt 0 ] || fail "no manifests in deploy/k8s"
for v in "${KUBE_VERSIONS[@]}"; do
  say "kubernetes-validate --strict -k $v (offline schemas) ${MANIFESTS[*]}"
  "${OFFLINE[@]}" "$VENV/bin/kubernetes-validate" --strict --no-warn -k "$v" "${MANIFESTS[@]}" ||
    fail "a Kubernetes manifest does not validate against the $v schemas"
done

say "manifest cross-checks (selectors, targets, probes, ports, annotations, config)"
"$PY" - "$WORK/imagegate.toml" <<'EOF' || fail "deploy/k8s: see the problems above"
import glob, os, re, sys, tomllib, yaml
problems = []
def problem(msg): problems.append(msg)

docs = []
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    if os.path.basename(path) == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs.append((path, doc))
by_kind = {}
for path, doc in docs:
    by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

# kustomization: lists every manifest, and only existing files. `*.example.yaml` files are
# examples to copy and edit (an Ingress for your host): validated like the rest, never listed.
kust = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
listed = set(kust.get("resources", []))
present = {os.path.basename(p) for p in glob.glob("deploy/k8s/*.yaml")} - {"kustomization.yaml"}
for example in sorted(p for p in present if p.endswith(".example.yaml")):
    if example in listed:
        problem(f"kustomization.yaml lists {example}: examples are applied by hand, after editing")
    present.discard(example)
    listed.discard(example)
for missing in sorted(present - listed):
    problem(f"kustomization.yaml does not list {missing}")
for extra in sorted(listed - present):
    problem(f"kustomization.yaml lists {extra}, which does not exist")

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

deployments = by_kind.get("Deployment", {})
services = by_kind.get("Service", {})
configmaps = by_kind.get("ConfigMap", {})
for want in ("imagegate-bff", "imagegate-compute"):
    if want not in deployments:
        problem(f"no Deployment {want}")
for name, dep in deployments.items():
    tmpl = dep["spec"]["template"]
    labels = tmpl["metadata"].get("labels", {})
    if not matches(dep["spec"]["selector"].get("matchLabels"), labels):
        problem(f"Deployment {name}: selector does not match its pod labels")
    if not any(matches(s["spec"].get("selector"), labels) for s in services.values()):
        problem(f"Deployment {name}: no Service selects its pods")
    if not any(matches(p["spec"]["selector"].get("matchLabels"), labels)
               for p in by_kind.get("PodDisruptionBudget", {}).values()):
        problem(f"Deployment {name}: no PodDisruptionBudget covers it")
    hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
            if h["spec"]["scaleTargetRef"].get("kind") == "Deployment" and h["spec"]["scaleTargetRef"]["name"] == name]
    if len(hpas) != 1:
        problem(f"Deployment {name}: expected one HorizontalPodAutoscaler (autoscaling/v2), found {len(hpas)}")
    elif hpas[0]["apiVersion"] != "autoscaling/v2":
        problem(f"HPA for {name} is not autoscaling/v2")
    elif hpas[0]["spec"].get("minReplicas", 1) < 2:
        problem(f"HPA for {name}: minReplicas < 2 leaves the PodDisruptionBudget nothing to protect")
    spec = tmpl["spec"]
    ann = tmpl["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
        problem(f"Deployment {name}: prometheus.io/scrape \"true\" and prometheus.io/path /metrics expected")
    ports = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
    if int(ann.get("prometheus.io/port", 0)) not in ports:
        problem(f"Deployment {name}: prometheus.io/port {ann.get('prometheus.io/port')} is no container port")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in configmaps:
            problem(f"Deployment {name}: volume {v['name']} uses unknown ConfigMap {v['configMap']['name']}")
    for c in spec["containers"]:
        res = c.get("resources", {})
        if not {"cpu", "memory"} <= set(res.get("requests", {})):
            problem(f"{name}/{c['name']}: resources.requests needs cpu and memory")
        if "memory" not in res.get("limits", {}):
            problem(f"{name}/{c['name']}: resources.limits needs memory")
        # The schemas take any string for a quantity; the API server would refuse a bad one.
        for kind in ("requests", "limits"):
            for what, q in res.get(kind, {}).items():
                if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?", str(q)):
                    problem(f"{name}/{c['name']}: resources.{kind}.{what} {q!r} is not a Kubernetes quantity")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                problem(f"{name}/{c['name']}: no {probe}")
        args = c.get("args", [])
        cfg = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
        if len(cfg) != 1:
            problem(f"{name}/{c['name']}: expected one --config=PATH argument")
        else:
            mount = next((m for m in c.get("volumeMounts", []) if cfg[0].startswith(m["mountPath"].rstrip("/") + "/")), None)
            vol = volumes.get(mount["name"]) if mount else None
            if not vol or "configMap" not in vol:
                problem(f"{name}/{c['name']}: --config {cfg[0]} is not on a mounted ConfigMap")
            elif os.path.basename(cfg[0]) not in configmaps.get(vol["configMap"]["name"], {}).get("data", {}):
                problem(f"{name}/{c['name']}: ConfigMap {vol['configMap']['name']} has no key {os.path.basename(cfg[0])}")
        listen = [a.split("=", 1)[1] for a in args if a.startswith("--listen=")]
        if not listen or not listen[0].startswith("0.0.0.0:") or int(listen[0].split(":")[1]) not in ports:
            problem(f"{name}/{c['name']}: --listen=0.0.0.0:PORT on a container port expected, got {listen}")

# Ingresses: every backend is a Service of these manifests, on one of its ports.
for name, ing in by_kind.get("Ingress", {}).items():
    for rule in ing["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            svc = path["backend"].get("service", {})
            target = services.get(svc.get("name"))
            port = svc.get("port", {})
            if target is None:
                problem(f"Ingress {name}: backend Service {svc.get('name')!r} is not in deploy/k8s")
            elif not any(port.get("name") == p.get("name") if "name" in port else port.get("number") == p["port"]
                         for p in target["spec"].get("ports", [])):
                problem(f"Ingress {name}: Service {svc['name']} has no port {port}")

bff = deployments.get("imagegate-bff", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
compute = deployments.get("imagegate-compute", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
# BFF: HTTP probes on the contract's health routes; metrics on the HTTP port.
if bff.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
    problem("BFF livenessProbe must be httpGet /health/live")
if bff.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
    problem("BFF readinessProbe must be httpGet /health/ready")
if bff and bff.get("args", [""])[0] != "bff":
    problem("BFF container must run `imagegate bff`")
# Compute: native gRPC probes on 50051, metrics listener on all interfaces.
for probe in ("livenessProbe", "readinessProbe"):
    if compute.get(probe, {}).get("grpc", {}).get("port") != 50051:
        problem(f"compute {probe} must be a grpc probe on port 50051")
if compute and compute.get("args", [""])[0] != "compute":
    problem("compute container must run `imagegate compute`")
ml = [a.split("=", 1)[1] for a in compute.get("args", []) if a.startswith("--metrics-listen=")]
cann = deployments.get("imagegate-compute", {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
if ml != [f"0.0.0.0:{cann.get('prometheus.io/port')}"]:
    problem(f"compute --metrics-listen must be 0.0.0.0:<prometheus.io/port>, got {ml}")
# Headless compute Service; the BFF's GRPC_COMPUTE_URL points at it.
csvc = services.get("imagegate-compute", {}).get("spec", {})
if csvc.get("clusterIP") != "None":
    problem("Service imagegate-compute must be headless (clusterIP: None)")
env = {e["name"]: e.get("value") for e in bff.get("env", [])}
url = env.get("GRPC_COMPUTE_URL") or ""
# dns:// resolves the headless Service to every ready pod (the BFF balances over them).
m = re.fullmatch(r"(?:https?://|dns:///?)?([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", url)
if not m or m.group(1) != "imagegate-compute" or int(m.group(2)) not in {p["port"] for p in csvc.get("ports", [])}:
    problem(f"BFF GRPC_COMPUTE_URL {url!r} must point at the headless Service imagegate-compute on its gRPC port")

# The ConfigMap's TOML: parses, and is the example config with only the in-cluster differences.
cm = configmaps.get("imagegate-config", {}).get("data", {}).get("imagegate.toml")
if cm is None:
    problem("ConfigMap imagegate-config has no imagegate.toml")
else:
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out
    try:
        ours = flat(tomllib.loads(cm))
    except tomllib.TOMLDecodeError as e:
        problem(f"ConfigMap imagegate.toml is not valid TOML: {e}")
        ours = None
    if ours is not None:
        example = flat(tomllib.load(open("deploy/imagegate.example.toml", "rb")))
        may_differ = {"compute_url", "bff.listen", "compute.listen", "compute.metrics_listen",
                      "bff.max_buffered_bytes"}   # sized to the container's memory limit
        in_cluster_only = lambda k: k.startswith("store.")   # uploads go to a shared bucket in k8s
        for k, v in example.items():
            if in_cluster_only(k):
                continue
            if k not in ours:
                problem(f"ConfigMap imagegate.toml lacks `{k}` (in deploy/imagegate.example.toml)")
            elif ours[k] != v and k not in may_differ:
                problem(f"ConfigMap imagegate.toml `{k}` = {ours[k]!r}, the example says {v!r}")
        for k in ours:
            if k not in example and not in_cluster_only(k) and not k.startswith("routes."):
                problem(f"ConfigMap imagegate.toml has `{k}`, which deploy/imagegate.example.toml does not document")
        for k in ("bff.listen", "compute.listen", "compute.metrics_listen"):
            if not str(ours.get(k, "")).startswith("0.0.0.0:"):
                problem(f"ConfigMap imagegate.toml `{k}` should listen on 0.0.0.0 in a pod")
        open(sys.argv[1], "w").write(cm)

for p in problems:
    print("  -", p)
print(f"  {len(docs)} objects: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items())))
sys.exit(1 if problems else 0)
EOF

# ----------------------------------------------------------------------------- 5. Dockerfile
say "deploy/Dockerfile: stages, user, entrypoint, COPY sources"
"$PY" - <<'EOF' || fail "deploy/Dockerfile: see the problems above"
import os, re, shlex, sys
text = open("deploy/Dockerfile").read()
lines = re.sub(r"\\\n", " ", text).splitlines()
instr = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
problems = []
froms = [l for l in instr if l.upper().startswith("FROM ")]
if len(froms) < 2 or not froms[0].split()[1].startswith("rust:1-bookworm") or froms[-1].split()[1] != "debian:bookworm-slim":
    problems.append("expected a rust:1-bookworm builder and a debian:bookworm-slim runtime stage")
if not any("nasm" in l for l in instr if l.upper().startswith("RUN ")):
    problems.append("the builder must install nasm (mozjpeg SIMD)")
if not any("cargo build --release" in l and "--bin imagegate" in l for l in instr):
    problems.append("expected `cargo build --release --bin imagegate`")
users = [l.split()[1] for l in instr if l.upper().startswith("USER ")]
if not users or users[-1].split(":")[0] in ("root", "0"):
    problems.append("the runtime stage must run as a non-root USER")
if 'ENTRYPOINT ["imagegate"]' not in instr:
    problems.append('expected ENTRYPOINT ["imagegate"]')
for l in instr:
    if l.upper().startswith("COPY ") and "--from=" not in l:
        args = [a for a in shlex.split(l)[1:] if not a.startswith("--")]
        for src in args[:-1]:
            if not os.path.exists(src):
                problems.append(f"COPY source {src} does not exist (the context is the repository root)")
for p in problems:
    print("  -", p)
sys.exit(1 if problems else 0)
EOF

# ----------------------------------------------------------------------------- 6. live scrape
# Built the way `make test` builds it (with the dev-dependencies' features unified), so that
# CI, which runs this and then the tests, compiles the dependency tree once, not twice.
say "cargo test --no-run --test it (builds target/debug/imagegate as the tests do)"
cargo test --quiet --no-run --test it || fail "cargo test --no-run --test it failed"
BIN=$ROOT/target/debug/imagegate

# Three distinct free ports, held open together while chosen (one at a time, the kernel may
# hand out the same ephemeral port twice: it happened, and compute and the BFF then collided).
read -r GRPC_PORT METRICS_PORT HTTP_PORT < <("$PY" -c '
import socket
held = [socket.socket() for _ in range(3)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))')
CONFIG=$WORK/imagegate.toml # the ConfigMap's own TOML, extracted above
mkdir -p "$WORK/uploads"
# The in-cluster config stores uploads in a bucket; here, a temporary directory.
export IMAGEGATE_STORE__BACKEND=fs IMAGEGATE_STORE__DIR=$WORK/uploads
export RUST_LOG=${RUST_LOG:-warn}

say "starting imagegate compute (127.0.0.1:$GRPC_PORT, metrics :$METRICS_PORT) and bff (127.0.0.1:$HTTP_PORT) with the ConfigMap's config"
"$BIN" compute --config "$CONFIG" --listen "127.0.0.1:$GRPC_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
  >"$WORK/compute.log" 2>&1 &
PIDS+=($!)
GRPC_COMPUTE_URL=http://127.0.0.1:$GRPC_PORT "$BIN" bff --config "$CONFIG" --listen "127.0.0.1:$HTTP_PORT" \
  >"$WORK/bff.log" 2>&1 &
PIDS+=($!)

"$PY" - "$HTTP_PORT" "$METRICS_PORT" "$WORK" <<'EOF' || { tail -n 20 "$WORK"/*.log >&2 || true; fail "could not scrape both processes (logs above)"; }
import sys, time, urllib.request, urllib.error
http, metrics, work = sys.argv[1:]
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""
deadline = time.time() + 60
while True:
    # /health/ready goes over the realtime lane: once it is 200, compute is up and both lanes
    # have their families populated.
    status, _ = get(f"http://127.0.0.1:{http}/health/ready")
    if status == 200:
        break
    if time.time() > deadline:
        sys.exit(f"  BFF /health/ready did not answer 200 within 60 s (last: {status})")
    time.sleep(0.2)
for name, url in (("bff", f"http://127.0.0.1:{http}/metrics"), ("compute", f"http://127.0.0.1:{metrics}/metrics")):
    status, body = get(url)
    if status != 200:
        sys.exit(f"  GET {url} answered {status}")
    open(f"{work}/{name}.prom", "w").write(body)
EOF

for part in bff compute; do
  say "promtool check metrics < /metrics of $part"
  promtool check metrics <"$WORK/$part.prom" ||
    fail "the $part's /metrics does not pass promtool check metrics"
done

say "the contract's metric families are exported (CONTRACT.md §3), and every metric the rules and dashboard use"
"$PY" - "$WORK" <<'EOF' || fail "a metric is missing from the /metrics scrapes (see above)"
import re, sys
work = sys.argv[1]
want = {
    "bff": """imagegate_lane_requests_total imagegate_lane_request_duration_seconds imagegate_lane_in_flight
        imagegate_lane_queue_wait_seconds imagegate_lane_rejected_total imagegate_lane_limit imagegate_lane_connections
        imagegate_lane_bytes_sent_total imagegate_lane_bytes_received_total imagegate_http_requests_total
        imagegate_http_request_duration_seconds process_cpu_seconds_total process_resident_memory_bytes""".split(),
    "compute": """imagegate_compute_operations_total imagegate_compute_operation_duration_seconds
        imagegate_compute_queue_depth process_cpu_seconds_total process_resident_memory_bytes""".split(),
}
bad = False
for part, names in want.items():
    text = open(f"{work}/{part}.prom").read()
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    missing = [n for n in names if n not in declared]
    if missing:
        bad = True
        print(f"  - {part}: missing {', '.join(missing)}")
    for lane in ("heavy", "realtime"):
        if part == "bff" and not re.search(rf'^imagegate_lane_in_flight\{{lane="{lane}"\}} ', text, re.M):
            bad = True
            print(f'  - bff: no imagegate_lane_in_flight{{lane="{lane}"}}')
    print(f"  {part}: {len(declared)} families")
# Every metric the rules and the dashboard query is exported by one of the two processes
# (a histogram's _bucket/_sum/_count by its family).
exported = set()
for part in want:
    exported |= set(re.findall(r"^# TYPE (\S+) ", open(f"{work}/{part}.prom").read(), re.M))
# A labelled family shows up only once it has a series (imagegate_store_errors_total waits for
# its first error): for those, the name must at least be registered in the source.
import glob
source = "".join(open(f).read() for f in glob.glob("src/**/*.rs", recursive=True))
for line in sorted(set(open(f"{work}/referenced.txt"))):
    where, name = line.split()
    family = re.sub(r"_(bucket|sum|count)$", "", name)
    if name in exported or family in exported:
        continue
    if f'"{family}"' in source:
        print(f"  {where}: {name} has no series yet (registered in src/, created on first use)")
        continue
    bad = True
    print(f"  - {where} uses {name}, which neither process exports nor the source registers")
sys.exit(1 if bad else 0)
EOF

echo
echo "lint-deploy: OK (rules, alert tests, scrape config, dashboard, Kubernetes schemas ${KUBE_VERSIONS[*]}, cross-checks, Dockerfile, live /metrics of bff and compute)"
