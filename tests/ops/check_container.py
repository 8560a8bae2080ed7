#!/usr/bin/env python3
"""Checks ops/container/Containerfile against the real `ledger` binary and sources, statically.

  check_container.py LEDGER_BINARY SOURCE_DIR

The image itself is built and run by ops/image.sh (too slow for CI: docs/operations.md,
"Container image"); this is the cheap check CI runs on every change:
  - the base is the build argument BASE_IMAGE (default debian:bookworm-slim) and every stage
    starts from it; the build stage runs ops/setup.sh and builds only the `ledger` target;
  - the runtime stage copies the built binary to the ENTRYPOINT, which is `ledger` in exec form;
  - its USER is numeric, not root, and the runAsUser of every ops/k8s container;
  - the HEALTHCHECK asks a token-free GET route of api/openapi.json (/health/live) on serve's
    default port (also the EXPOSEd one), and LEDGER_* variables are ones the binary reads;
  - every shared library the binary links directly comes from a package the runtime stage
    installs (or one in every Debian base), found with readelf, ldd and dpkg; no PostgreSQL
    server or client package is installed there (only `ledger dev` runs them);
  - apt-get as in hadolint's rules: --no-install-recommends, lists removed in the same layer;
  - the build context ignore file leaves out build trees and .git.
Exits 1 naming every problem found; 0 with a one-line summary otherwise.
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_deployment as deployment  # noqa: E402  (Command, routes, load_yaml_documents, problems)

problem = deployment.problem
WHERE = "ops/container/Containerfile"
DEFAULT_BASE = "debian:bookworm-slim"
# Packages of every Debian base image (Priority required, or needed by apt itself): the runtime
# stage need not install them.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
POSTGRESQL_PACKAGE = re.compile(r"^postgresql(-client)?(-\d+)?$|^postgresql-common$")


def instructions(text):
    """(line number, INSTRUCTION, arguments) of a Containerfile: comments dropped, continuation
    lines joined."""
    result = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        result.append((start, keyword.upper(), arguments.strip()))
        pending = ""
    if pending:
        problem(WHERE, f"line {start}: a continuation line ends the file")
    return result


def exec_form(arguments):
    """The list of an exec-form (JSON array) instruction, or None for the shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def stages(parsed):
    """[(name or None, base text, [instructions])] in order, and the ARGs before the first FROM."""
    global_args = {}
    result = []
    for line, keyword, arguments in parsed:
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append((name, words[0], []))
        elif not result:
            if keyword != "ARG":
                problem(WHERE, f"line {line}: {keyword} before the first FROM")
            name, _, default = arguments.partition("=")
            global_args[name] = default or None
        else:
            result[-1][2].append((line, keyword, arguments))
    return result, global_args


def runtime_packages(stage_instructions):
    """Packages the stage's `apt-get install` commands name."""
    packages = set()
    for line, keyword, arguments in stage_instructions:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", arguments):
            words = shlex.split(command)
            if "apt-get" in words and "install" in words:
                packages.update(w for w in words[words.index("install") + 1:] if not w.startswith("-"))
    return packages


def check_apt(stage_name, stage_instructions):
    # hadolint DL3015 (no recommends) and DL3009 (delete the lists), with Debian's tools only.
    for line, keyword, arguments in stage_instructions:
        if keyword != "RUN" or "apt-get" not in arguments:
            continue
        if "install" in arguments and "--no-install-recommends" not in arguments:
            problem(WHERE, f"line {line}: apt-get install without --no-install-recommends")
        if "install" in arguments and " -y" not in arguments:
            problem(WHERE, f"line {line}: apt-get install without -y (the build would wait for an answer)")
        if "update" in arguments and "rm -rf /var/lib/apt/lists" not in arguments:
            problem(WHERE, f"line {line}: apt-get update without removing /var/lib/apt/lists in the same RUN")


def linked_packages(binary_path):
    """{library soname: Debian package} of the libraries the binary links directly (readelf's
    NEEDED entries, resolved by ldd, owned per dpkg)."""
    readelf = subprocess.run(["readelf", "-d", binary_path], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf.stdout)
    ldd = subprocess.run(["ldd", binary_path], capture_output=True, text=True, check=True)
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd.stdout, re.MULTILINE))
    candidates = {}  # soname -> the paths dpkg may know it by (merged /usr: /lib or /usr/lib)
    for soname in needed:
        path = paths.get(soname)
        if path is None or path == "not":
            problem(binary_path, f"ldd cannot resolve {soname}")
            continue
        candidates[soname] = {path, str(Path(path).resolve())}
        candidates[soname].update("/usr" + p for p in list(candidates[soname]) if not p.startswith("/usr/"))
    # One dpkg -S for all (each call reads the whole database); it exits 1 when some path is
    # unknown, which is expected for the aliases.
    search = subprocess.run(["dpkg", "-S", *sorted(set().union(*candidates.values()))],
                            capture_output=True, text=True)
    owner_of = {}
    for line in search.stdout.splitlines():
        package, _, path = line.partition(": ")
        owner_of[path] = package.split(":")[0]
    owners = {}
    for soname, paths_of_library in candidates.items():
        found = [owner_of[p] for p in paths_of_library if p in owner_of]
        if found:
            owners[soname] = found[0]
        else:
            problem(binary_path, f"no Debian package owns {sorted(paths_of_library)[0]} ({soname})")
    return owners


def help_text(binary_path, path):
    result = subprocess.run([binary_path, *path, "--help"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        sys.exit(f"`ledger {' '.join(path)} --help` failed: {result.stderr}")
    return result.stdout


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    binary_path, source = sys.argv[1], Path(sys.argv[2])
    # The image's environment reaches every command: its LEDGER_* variables must be the root's
    # (read by all) or serve's (the command the HEALTHCHECK is for).
    root, serve = (deployment.Command(path, help_text(binary_path, path)) for path in ([], ["serve"]))
    default_port = re.search(r"=(\d+)", serve.options["--http-port"]).group(1)
    envs = set(root.envs) | set(serve.envs)
    token_free = deployment.routes(source)

    if not (source / WHERE).exists():
        problem(WHERE, "missing")
        return finish()
    parsed = instructions((source / WHERE).read_text())
    all_stages, global_args = stages(parsed)
    if len(all_stages) < 2:
        problem(WHERE, f"{len(all_stages)} stage(s): the image is multi-stage (build, then runtime)")
        return finish()

    # The base: one build argument, defaulting to Debian 12 slim, used by every stage.
    if global_args.get("BASE_IMAGE") != DEFAULT_BASE:
        problem(WHERE, f"no `ARG BASE_IMAGE={DEFAULT_BASE}` before the first FROM")
    for name, base, _ in all_stages:
        if base not in ("${BASE_IMAGE}", "$BASE_IMAGE"):
            problem(WHERE, f"stage {name or '(runtime)'} starts FROM {base}, not the BASE_IMAGE argument")

    # The build stage: the project's own setup, then only the binary.
    build_name, _, build = all_stages[0]
    build_runs = " ".join(a for _, k, a in build if k == "RUN")
    if "ops/setup.sh" not in build_runs:
        problem(WHERE, "the build stage does not run ops/setup.sh")
    if "--target ledger" not in build_runs:
        problem(WHERE, "the build stage does not build only the ledger target (--target ledger)")

    # The runtime stage.
    runtime_name, _, runtime = all_stages[-1]
    final = {}
    for line, keyword, arguments in runtime:
        final.setdefault(keyword, []).append((line, arguments))
    entrypoint = exec_form(final.get("ENTRYPOINT", [(0, "")])[-1][1])
    if not entrypoint:
        problem(WHERE, "the runtime stage has no exec-form ENTRYPOINT")
    elif Path(entrypoint[0]).name != "ledger" or len(entrypoint) != 1:
        problem(WHERE, f"ENTRYPOINT is {entrypoint}, not the ledger binary alone (the command line is the subcommand)")
    copies = [a.split() for _, a in final.get("COPY", [])]
    binary_copies = [c for c in copies if c[0] == f"--from={build_name}"]
    if not any(entrypoint and c[-1] == entrypoint[0] for c in binary_copies):
        problem(WHERE, f"the runtime stage copies no binary from stage {build_name} to the ENTRYPOINT")
    if any(not c[0].startswith("--from=") for c in copies):
        problem(WHERE, "the runtime stage copies from the build context: only the built binary goes in")

    users = final.get("USER", [])
    uid = users[-1][1].split(":")[0] if users else "0"
    if not uid.isdigit() or int(uid) == 0:
        problem(WHERE, f"the runtime USER is {uid or 'root'}: it must be a numeric non-root uid "
                       "(Kubernetes runAsNonRoot can check only a number)")
    for manifest in sorted((source / "ops/k8s").glob("*.yaml")):
        for document in deployment.load_yaml_documents(manifest):
            text = repr(document)
            for found in re.findall(r"'runAsUser': (\d+)", text):
                if found != uid:
                    problem(f"ops/k8s/{manifest.name}", f"runAsUser {found} is not the image's user {uid}")

    for line, arguments in final.get("ENV", []):
        for name in re.findall(r"\b(LEDGER_\w+)=", arguments):
            if name not in envs:
                problem(WHERE, f"line {line}: ENV {name}: neither ledger nor ledger serve reads it")
    exposed = [a.split("/")[0] for _, a in final.get("EXPOSE", [])]
    if exposed != [default_port]:
        problem(WHERE, f"EXPOSE {exposed}, not serve's default port {default_port}")

    health = final.get("HEALTHCHECK", [])
    if not health:
        problem(WHERE, "the runtime stage has no HEALTHCHECK")
    else:
        line, arguments = health[-1]
        url = re.search(r"http://([^/\"' ]+)(/[^\"' ]*)", arguments)
        if not url:
            problem(WHERE, f"line {line}: the HEALTHCHECK asks no http:// URL")
        else:
            host, path = url.groups()
            if path != "/health/live":
                problem(WHERE, f"line {line}: the HEALTHCHECK asks {path}, not /health/live")
            if path not in token_free:
                problem(WHERE, f"line {line}: {path} is no token-free GET route of api/openapi.json")
            port = re.sub(r"^[^:]+:", "", host)
            port_default = re.fullmatch(r"\$\{(\w+):-(\d+)\}", port)
            if port_default:
                if port_default.group(1) not in serve.envs:
                    problem(WHERE, f"line {line}: the HEALTHCHECK port reads {port_default.group(1)}, which serve does not")
                port = port_default.group(2)
            if port != default_port:
                problem(WHERE, f"line {line}: the HEALTHCHECK asks port {port}, not serve's {default_port}")
        if "curl" in arguments and "curl" not in runtime_packages(runtime):
            problem(WHERE, "the HEALTHCHECK runs curl, which the runtime stage does not install")

    for name, _, stage_instructions in all_stages:
        check_apt(name, stage_instructions)

    installed = runtime_packages(runtime)
    for package in sorted(installed):
        if POSTGRESQL_PACKAGE.match(package):
            problem(WHERE, f"the runtime stage installs {package}: only `ledger dev` needs PostgreSQL's programs")
    owners = linked_packages(binary_path)
    for soname, package in sorted(owners.items()):
        if package not in installed and package not in BASE_PACKAGES:
            problem(WHERE, f"ledger links {soname} of package {package}, which the runtime stage does not install")

    ignore = source / ".dockerignore"
    ignored = ({line.strip() for line in ignore.read_text().splitlines() if not line.startswith("#")}
               if ignore.exists() else set())
    for needed in (".git", "build"):
        if needed not in ignored:
            problem(".dockerignore", f"does not leave {needed} out of the build context")

    return finish(f"{len(all_stages)} stages; entrypoint {entrypoint}, user {uid}, HEALTHCHECK on "
                  f"/health/live:{default_port}; {len(owners)} linked libraries from {len(installed)} "
                  "installed packages and the base")


def finish(summary=None):
    if deployment.problems:
        print("\n".join(deployment.problems))
        print(f"{len(deployment.problems)} problem(s)")
        sys.exit(1)
    print(f"ok: {summary}")


if __name__ == "__main__":
    main()
