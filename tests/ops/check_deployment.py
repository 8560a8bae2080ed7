#!/usr/bin/env python3
"""Checks the deployment files of ops/ against the real `ledger` binary and sources.

  check_deployment.py commands LEDGER_BINARY SOURCE_DIR
      Every `ledger` command line of compose, Kubernetes and systemd is a real subcommand with
      real flags, positionals and values (parsed from `ledger <command> --help` of the built
      binary); every LEDGER_* variable is one the command (or the root) reads, and its value
      passes the flag's check; probes, ports, Services, ServiceMonitor, proxy and scrape
      targets meet the port serve listens on, on a host other containers can reach; probe paths
      are token-free GET routes of api/openapi.json (the router's table); grace periods exceed serve's drain.
  check_deployment.py alert-tests SOURCE_DIR
      Every alert of ops/prometheus/alerts.yml has a unit test that fires it and one that does
      not (promtool runs them; this checks none is missing).
  check_deployment.py dashboard-rules SOURCE_DIR OUTPUT
      Writes every PromQL expression of the Grafana dashboard as a recording rule (Grafana's
      $job and $__rate_interval replaced by values), for `promtool check rules` to parse.
  check_deployment.py metrics SOURCE_DIR SCRAPE_FILE...
      Every ledger_* metric the Grafana dashboard and the alert rules use appears in the scraped
      files (serve's /metrics and the jobs' --metrics-file output).

Exits 1 naming every problem found; 0 with a one-line summary otherwise.
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # no silent skip: the check cannot run without its parser
    sys.exit("python3-yaml is missing: run `bash ops/setup.sh`")

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# ---------------------------------------------------------------------------------------------
# What the binary accepts, from its --help.

def parse_option(line):
    """(--flag, type text or None, env name or None) of a help line, or None. CLI11 writes
    `  [-x,]--flag[,-x] [TYPE[:CHECK][=DEFAULT]] [(Env:NAME)]`, then two or more spaces and the
    description, on the same line or the next."""
    if not line.startswith("  -"):
        return None
    head = re.split(r"\s{2,}", line.strip())[0]
    env = re.search(r" \(Env:(\w+)\)$", head)
    if env:
        head = head[: env.start()]
    flag, _, kind = head.partition(" ")
    names = [n for n in flag.split(",") if n.startswith("--")]
    if not names:
        return None
    return names[0], (kind or None), (env.group(1) if env else None)


class Command:
    def __init__(self, path, help_text):
        self.path = path  # e.g. ["migrate", "status"]
        self.options = {}  # --flag -> type text or None (a flag without value)
        self.envs = {}  # LEDGER_X -> --flag
        self.positionals = []  # (name, type text)
        self.subcommands = []
        section = None
        for line in help_text.splitlines():
            if line.endswith(":") and not line.startswith(" "):
                section = line[:-1]
                continue
            if section == "Options":
                parsed = parse_option(line)
                if parsed:
                    flag, kind, env = parsed
                    self.options[flag] = kind
                    if env:
                        self.envs[env] = flag
            elif section == "Positionals":
                m = re.match(r"^  (\w+) (\S+)", line)
                if m:
                    self.positionals.append(m.groups())
            elif section == "Subcommands":
                m = re.match(r"^  (\w[\w-]*) ", line)
                if m:
                    self.subcommands.append(m.group(1))


def value_problem(kind, value):
    """Why `value` fails the check CLI11 shows in `kind` (TEXT:{a,b}, INT:INT in [0 - 9]...)."""
    if kind is None:
        return None
    kind = kind.split("=", 1)[0]  # drop the default
    members = re.search(r"\{([^}]*)\}", kind)
    if members and value not in members.group(1).split(","):
        return f"'{value}' is not one of {members.group(1)}"
    if kind.startswith(("INT", "UINT")):
        if not re.fullmatch(r"-?\d+", value):
            return f"'{value}' is not an integer"
        bounds = re.search(r"\[(-?\d+) - (-?\d+)\]", kind)
        if bounds and not int(bounds.group(1)) <= int(value) <= int(bounds.group(2)):
            return f"{value} is outside [{bounds.group(1)}, {bounds.group(2)}]"
    if kind.startswith("BOOLEAN") and value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return f"'{value}' is not a boolean"
    return None


class Binary:
    def __init__(self, path):
        self.path = path
        self.commands = {}
        self._load([])
        self.root = self.commands[()]

    def _load(self, path):
        result = subprocess.run([self.path, *path, "--help"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            sys.exit(f"`ledger {' '.join(path)} --help` failed: {result.stderr}")
        command = Command(path, result.stdout)
        self.commands[tuple(path)] = command
        for sub in command.subcommands:
            self._load([*path, sub])

    def check(self, where, argv, env):
        """argv: the arguments after `ledger`; env: LEDGER_* name -> value (None: unknown)."""
        path = []
        i = 0
        while i < len(argv) and not argv[i].startswith("-") and argv[i] in self.commands[tuple(path)].subcommands:
            path.append(argv[i])
            i += 1
        command = self.commands[tuple(path)]
        if command.subcommands:
            problem(where, f"`ledger {' '.join(argv)}`: `ledger {' '.join(path)}` needs a subcommand "
                           f"({', '.join(command.subcommands)})")
            return None
        if not path:
            problem(where, f"`ledger {' '.join(argv)}`: no subcommand")
            return None
        # Options of the chain (root settings reach every subcommand: fallthrough).
        chain = [self.commands[tuple(path[:n])] for n in range(len(path) + 1)]
        options = {}
        envs = {}
        for c in chain:
            options.update(c.options)
            envs.update(c.envs)
        positionals = list(command.positionals)
        while i < len(argv):
            arg = argv[i]
            if arg.startswith("--"):
                flag, _, inline = arg.partition("=")
                if flag not in options:
                    problem(where, f"`ledger {' '.join(path)}` has no option {flag}")
                    i += 1
                    continue
                kind = options[flag]
                if kind is None:
                    i += 1
                    continue
                value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else None)
                if value is None:
                    problem(where, f"{flag} needs a value")
                elif (why := value_problem(kind, value)):
                    problem(where, f"{flag}: {why}")
                i += 1 if inline else 2
            else:
                if not positionals:
                    problem(where, f"`ledger {' '.join(path)}` takes no positional '{arg}'")
                else:
                    name, kind = positionals.pop(0)
                    if (why := value_problem(kind, arg)):
                        problem(where, f"positional {name}: {why}")
                i += 1
        for name, value in env.items():
            if not name.startswith("LEDGER_"):
                continue
            if name not in envs:
                problem(where, f"`ledger {' '.join(path)}` reads no {name}")
            elif value is not None and (why := value_problem(options[envs[name]], value)):
                problem(where, f"{name}: {why}")
        return path


# ---------------------------------------------------------------------------------------------
# Facts of the sources the deployment files must meet.

def routes(source):
    # api/openapi.json lists every route with its access (api_openapi_pgtest keeps it equal to
    # the router's table); the probes and the scrape may only use the GET routes needing no token.
    document = json.loads((source / "api/openapi.json").read_text())
    return {path for path, item in document["paths"].items()
            if "get" in item and item["get"].get("security") == []}


def serve_drain_seconds(source):
    text = (source / "app/serve_command.cpp").read_text()
    m = re.search(r"int shutdown_grace_ms = ([\d']+);", text)
    if not m:
        sys.exit("app/serve_command.cpp: shutdown_grace_ms not found (update check_deployment.py)")
    return int(m.group(1).replace("'", "")) / 1000


def load_yaml_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------------------------------------

def check_compose(binary, source, default_port):
    path = source / "ops/compose/compose.yaml"
    compose = load_yaml_documents(path)[0]
    serve_ports = set()
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if "ledger" not in image:
            continue
        where = f"{path.name} service {name}"
        command = service.get("command")
        if not isinstance(command, list):
            problem(where, "command must be a list (no shell in the image)")
            continue
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        chain = binary.check(where, [str(a) for a in command], env)
        if "LEDGER_JWT_SECRET" in env:
            problem(where, "LEDGER_JWT_SECRET is a secret literal: use LEDGER_JWT_SECRET_FILE")
        for url_env in ("LEDGER_DATABASE_URL", "LEDGER_ADMIN_DATABASE_URL"):
            if re.search(r"://[^/@]*:[^/@]*@", env.get(url_env, "")):
                problem(where, f"{url_env} holds a password: use PGPASSFILE")
        for file_env in ("LEDGER_JWT_SECRET_FILE", "PGPASSFILE"):
            if file_env in env:
                secret = env[file_env].removeprefix("/run/secrets/")
                if secret not in (service.get("secrets") or []):
                    problem(where, f"{file_env} names {env[file_env]}, not a secret of the service")
        if chain == ["serve"]:
            migrations_first = [
                dependency for dependency, condition in (service.get("depends_on") or {}).items()
                if condition.get("condition") == "service_completed_successfully"
                and compose["services"][dependency].get("command") == ["migrate", "up"]]
            if not migrations_first:
                problem(where, "serve does not wait for a completed `ledger migrate up`")
            if env.get("LEDGER_HTTP_HOST", "127.0.0.1") in ("127.0.0.1", "localhost"):
                problem(where, "serve listens on loopback only: the proxy cannot reach it")
            serve_ports.add(int(env.get("LEDGER_HTTP_PORT", default_port)))
            grace = service.get("stop_grace_period", "10s")
            if int(str(grace).rstrip("s")) <= serve_drain_seconds(source):
                problem(where, f"stop_grace_period {grace} does not exceed serve's drain")
    if len(serve_ports) != 1:
        problem(path.name, f"the serves listen on different ports: {serve_ports}")
        return
    port = serve_ports.pop()
    nginx = (source / "ops/compose/nginx.conf").read_text()
    for target in re.findall(r"server (serve-\d+):(\d+)", nginx):
        if int(target[1]) != port:
            problem("nginx.conf", f"upstream {target[0]}:{target[1]}: serve listens on {port}")
        if target[0] not in compose["services"]:
            problem("nginx.conf", f"upstream {target[0]} is no compose service")
    prometheus = load_yaml_documents(source / "ops/compose/prometheus.yml")[0]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    if "ledger-serve" not in jobs:
        problem("prometheus.yml", "no job ledger-serve (the job the alerts name)")
    else:
        for target in jobs["ledger-serve"]["static_configs"][0]["targets"]:
            host, target_port = target.split(":")
            if host not in compose["services"] or int(target_port) != port:
                problem("prometheus.yml", f"target {target} is not a serve on port {port}")


def check_systemd(binary, source):
    directory = source / "ops/systemd"
    def env_file(name):
        values = {}
        path = directory / name
        if not path.exists():
            problem(name, "missing")
            return values
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value
        return values

    units = sorted(directory.glob("*.service"))
    if not units:
        problem("ops/systemd", "no units")
    for unit in units:
        text = unit.read_text()
        for line in text.splitlines():
            if not line.startswith("ExecStart="):
                continue
            argv = shlex.split(line.removeprefix("ExecStart="))
            if argv[0] != "/usr/bin/ledger":
                problem(unit.name, f"ExecStart runs {argv[0]}, not /usr/bin/ledger")
                continue
            instances = ["balance", "audit", "loan", "all"] if "%i" in line else [None]
            for instance in instances:
                args = [a.replace("%i", instance) if instance else a for a in argv[1:]]
                unit_env = {}
                for m in re.findall(r"^EnvironmentFile=-?/etc/ledger/(\S+)$", text, re.M):
                    unit_env.update(env_file(m))
                for m in re.findall(r"^Environment=(\w+)=(\S+)", text, re.M):
                    unit_env[m[0]] = None  # credential paths (%d): not known here
                binary.check(f"{unit.name}{' (' + instance + ')' if instance else ''}", args, unit_env)
        if "ExecStart=/usr/bin/ledger serve" in text:
            for dependency in ("Requires", "After"):
                names = " ".join(re.findall(rf"^{dependency}=(.*)$", text, re.M)).split()
                if not any((directory / n).exists() and "ExecStart=/usr/bin/ledger migrate up" in (directory / n).read_text()
                           for n in names):
                    problem(unit.name, f"serve has no {dependency}= on the unit running `ledger migrate up`")
            m = re.search(r"^TimeoutStopSec=(\d+)s?$", text, re.M)
            if not m or int(m.group(1)) <= serve_drain_seconds(source):
                problem(unit.name, "TimeoutStopSec must exceed serve's drain")


def check_kubernetes(binary, source, default_port, live_routes):
    documents = []
    for path in sorted((source / "ops/k8s").glob("*.yaml")):
        documents += [(path.name, d) for d in load_yaml_documents(path)]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in documents if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: set((d.get("stringData") or d.get("data") or {}).keys())
               for _, d in documents if d["kind"] == "Secret"}
    services = {d["metadata"]["name"]: d for _, d in documents if d["kind"] == "Service"}
    for name, d in documents:
        if not all(k in d for k in ("apiVersion", "kind", "metadata")) or "name" not in d["metadata"]:
            problem(name, "a document without apiVersion, kind or metadata.name")
        elif d["kind"] != "Namespace" and d["metadata"].get("namespace") != "ledger":
            problem(name, f"{d['kind']} {d['metadata']['name']} is not in namespace ledger")
        if d.get("kind") == "Deployment":
            # The API server refuses a Deployment whose selector does not match its pods.
            selector = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if not selector.items() <= labels.items():
                problem(name, f"Deployment {d['metadata']['name']}: selector {selector} does not match its pods")
    drain = serve_drain_seconds(source)
    serve_labels = None
    checked = 0
    for name, d in documents:
        kind = d["kind"]
        if kind == "Deployment":
            pod = d["spec"]["template"]
        elif kind == "Job":
            pod = d["spec"]["template"]
        elif kind == "CronJob":
            pod = d["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        spec = pod["spec"]
        for container in spec["containers"]:
            if "ledger" not in container["image"].split("/")[-1].split(":")[0]:
                continue
            checked += 1
            where = f"{name} {kind} {d['metadata']['name']} container {container['name']}"
            if "command" in container:
                problem(where, "command overrides the image's `ledger` entrypoint: use args")
            env = {}
            for source_ref in container.get("envFrom", []):
                ref = source_ref.get("configMapRef", {}).get("name")
                if ref not in configmaps:
                    problem(where, f"envFrom names no ConfigMap {ref}")
                    continue
                env.update({k: str(v) for k, v in configmaps[ref].items()})
            for e in container.get("env", []):
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                else:
                    key = e["valueFrom"]["secretKeyRef"]
                    if key["key"] not in secrets.get(key["name"], set()):
                        problem(where, f"{e['name']} names no key {key['key']} of Secret {key['name']}")
                    env[e["name"]] = None
            chain = binary.check(where, [str(a) for a in container.get("args", [])], env)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for name_env in ("LEDGER_JWT_SECRET_FILE",):
                if env.get(name_env):
                    directory, _, file = env[name_env].rpartition("/")
                    volume = volumes.get(mounts.get(directory))
                    items = [i["path"] for i in (volume or {}).get("secret", {}).get("items", [])]
                    if file not in items:
                        problem(where, f"{name_env} {env[name_env]} is not a file of a mounted Secret")
            if chain != ["serve"]:
                if "livenessProbe" in container or "readinessProbe" in container:
                    problem(where, "only serve has HTTP to probe")
                continue
            serve_labels = pod["metadata"]["labels"]
            port = int(env.get("LEDGER_HTTP_PORT") or default_port)
            if env.get("LEDGER_HTTP_HOST", "127.0.0.1") in ("127.0.0.1", "localhost"):
                problem(where, "serve listens on loopback only: probes and the Service cannot reach it")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if port not in ports.values():
                problem(where, f"no containerPort {port} (serve's port)")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if not http:
                    problem(where, f"no {probe} over HTTP")
                    continue
                if http["path"] not in live_routes:
                    problem(where, f"{probe} path {http['path']} is no route of the router ({sorted(live_routes)})")
                probe_port = ports.get(http["port"]) if isinstance(http["port"], str) else http["port"]
                if probe_port != port:
                    problem(where, f"{probe} port {http['port']} is not serve's port {port}")
            if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
                problem(where, "the liveness probe must be /health/live (readiness fails while the database is down)")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= drain:
                problem(where, f"terminationGracePeriodSeconds {grace} does not exceed serve's drain of {drain} s")
            for service in services.values():
                if service["spec"]["selector"].items() <= serve_labels.items():
                    for p in service["spec"]["ports"]:
                        target = p["targetPort"]
                        if (ports.get(target) if isinstance(target, str) else target) != port:
                            problem(f"Service {service['metadata']['name']}", f"targetPort {target} is not serve's port")
    for name, d in documents:
        if d["kind"] == "ServiceMonitor":
            endpoints = d["spec"]["endpoints"]
            matching = [s for s in services.values()
                        if d["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
            if not matching:
                problem(name, "the ServiceMonitor selects no Service")
            for endpoint in endpoints:
                if endpoint.get("path", "/metrics") not in live_routes:
                    problem(name, f"path {endpoint.get('path')} is no route")
                for s in matching:
                    if endpoint["port"] not in [p.get("name") for p in s["spec"]["ports"]]:
                        problem(name, f"port {endpoint['port']} is no port of Service {s['metadata']['name']}")
                    if s["metadata"]["name"] != "ledger-serve":
                        problem(name, "the job (the Service's name) must be ledger-serve, as the alerts say")
        if d["kind"] in ("PodDisruptionBudget", "NetworkPolicy") and serve_labels is not None:
            selector = d["spec"].get("selector", d["spec"].get("podSelector", {})).get("matchLabels")
            if selector and not selector.items() <= serve_labels.items() and "serve" in d["metadata"]["name"]:
                problem(name, f"{d['kind']} {d['metadata']['name']} selects no serve pod")
        if d["kind"] == "HorizontalPodAutoscaler":
            target = d["spec"]["scaleTargetRef"]["name"]
            if not any(x["kind"] == "Deployment" and x["metadata"]["name"] == target for _, x in documents):
                problem(name, f"the HPA scales no Deployment {target}")
    if serve_labels is None:
        problem("ops/k8s", "no serve Deployment")
    if not any(d["kind"] == "Job" and c.get("args") == ["migrate", "up"]
               for _, d in documents for c in (d["spec"]["template"]["spec"]["containers"] if d["kind"] == "Job" else [])):
        problem("ops/k8s", "no Job running `ledger migrate up`")
    return checked


def commands(binary_path, source):
    binary = Binary(binary_path)
    serve = binary.commands[("serve",)]
    default_port = int(re.search(r"=(\d+)", serve.options["--http-port"]).group(1))
    live_routes = routes(source)
    for needed in ("/health/live", "/health/ready", "/metrics"):
        if needed not in live_routes:
            problem("api/openapi.json", f"no token-free GET route {needed}")
    check_compose(binary, source, default_port)
    check_systemd(binary, source)
    containers = check_kubernetes(binary, source, default_port, live_routes)
    return f"{len(binary.commands)} commands read from --help; compose, systemd and {containers} Kubernetes containers checked"


def alert_tests(source):
    rules = load_yaml_documents(source / "ops/prometheus/alerts.yml")[0]
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    tests = load_yaml_documents(source / "ops/prometheus/alerts_test.yml")[0]["tests"]
    firing, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for alert in alerts:
        if alert not in firing:
            problem("alerts_test.yml", f"no test where {alert} fires")
        if alert not in quiet:
            problem("alerts_test.yml", f"no test where {alert} does not fire")
    docs = (source / "docs/operations.md").read_text()
    for alert in alerts:
        if f'<a id="alert-{alert.lower()}"></a>' not in docs:
            problem("docs/operations.md", f"no runbook entry for {alert} (anchor alert-{alert.lower()})")
    return f"{len(alerts)} alerts, each tested firing and not firing, each with a runbook entry"


METRIC = re.compile(r"\bledger_[a-z0-9_]+\b")


def metrics(source, scrapes):
    scraped = set()
    for scrape in scrapes:
        for line in Path(scrape).read_text().splitlines():
            if line and not line.startswith("#"):
                scraped.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    dashboard = json.loads((source / "ops/grafana/ledger-dashboard.json").read_text())
    used = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, f"dashboard panel '{panel['title']}'")
    rules = load_yaml_documents(source / "ops/prometheus/alerts.yml")[0]
    for group in rules["groups"]:
        for rule in group["rules"]:
            for text in (rule["expr"], *rule.get("annotations", {}).values()):
                for name in METRIC.findall(text):
                    used.setdefault(name, f"alert {rule['alert']}")
    if not used:
        problem("dashboard", "uses no ledger_ metric")
    for name, where in sorted(used.items()):
        if name not in scraped:
            problem(where, f"{name} is not in /metrics nor in the jobs' files")
    return f"{len(used)} metrics used by the dashboard and the alerts, all scraped"


def dashboard_rules(source, output):
    dashboard = json.loads((source / "ops/grafana/ledger-dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    rules = []
    for panel in dashboard["panels"]:
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"panel '{panel['title']}'", "does not use the dashboard's datasource variable")
        for target in panel.get("targets", []):
            expr = target["expr"]
            for used in re.findall(r"\$(\w+)", expr):
                if used not in variables and not used.startswith("__"):
                    problem(f"panel '{panel['title']}'", f"uses ${used}, which is no variable of the dashboard")
            expr = expr.replace("$__rate_interval", "1m").replace("$job", "ledger-serve")
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
    Path(output).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return f"{len(rules)} dashboard expressions written to {output}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode = sys.argv[1]
    if mode == "commands" and len(sys.argv) == 4:
        summary = commands(sys.argv[2], Path(sys.argv[3]))
    elif mode == "alert-tests" and len(sys.argv) == 3:
        summary = alert_tests(Path(sys.argv[2]))
    elif mode == "dashboard-rules" and len(sys.argv) == 4:
        summary = dashboard_rules(Path(sys.argv[2]), sys.argv[3])
    elif mode == "metrics" and len(sys.argv) >= 4:
        summary = metrics(Path(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} problem(s)")
        sys.exit(1)
    print(f"ok: {summary}")


if __name__ == "__main__":
    main()
