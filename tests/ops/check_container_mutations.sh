#!/usr/bin/env bash
# check_container_mutations.sh LEDGER_BINARY SOURCE_DIR: the check of the Containerfile
# (check_container.py) catches each mistake it is there for. Every case copies the files it
# reads into a temporary tree, breaks the Containerfile one way, and expects exit 1 with a
# message naming the mistake; the untouched copy must pass.
set -euo pipefail
binary=$1
source=$2
checker="$(dirname "$0")/check_container.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fresh_tree() {
  rm -rf "$work/tree"
  mkdir -p "$work/tree/ops/container" "$work/tree/api" "$work/tree/ops/k8s"
  cp "$source/ops/container/Containerfile" "$work/tree/ops/container/"
  cp "$source/api/openapi.json" "$work/tree/api/"
  cp "$source"/ops/k8s/*.yaml "$work/tree/ops/k8s/"
  cp "$source/.dockerignore" "$work/tree/"
}

failures=0
cases=0
# expect_problem DESCRIPTION SED_EXPRESSION EXPECTED_TEXT [FILE]
expect_problem() {
  local description=$1 expression=$2 expected=$3 file=${4:-ops/container/Containerfile}
  cases=$((cases + 1))
  fresh_tree
  local before
  before=$(cat "$work/tree/$file")
  sed -i -e "$expression" "$work/tree/$file"
  if [ "$before" = "$(cat "$work/tree/$file")" ]; then
    echo "FAILED: $description: the mutation '$expression' changed nothing (update this test)"
    failures=$((failures + 1))
    return
  fi
  local output status=0
  output=$(python3 "$checker" "$binary" "$work/tree" 2>&1) || status=$?
  if [ "$status" -ne 1 ] || ! grep -qF -- "$expected" <<<"$output"; then
    echo "FAILED: $description: expected exit 1 naming '$expected', got exit $status:"
    echo "$output"
    failures=$((failures + 1))
  else
    echo "ok: $description: $(grep -F -- "$expected" <<<"$output" | head -1)"
  fi
}

fresh_tree
python3 "$checker" "$binary" "$work/tree"

expect_problem "a shell as the entrypoint" 's|ENTRYPOINT \["/usr/bin/ledger"\]|ENTRYPOINT ["/bin/sh"]|' \
  "not the ledger binary alone"
expect_problem "root at run time" 's|^USER 10001:10001|USER root|' "must be a numeric non-root uid"
expect_problem "a user Kubernetes does not run as" 's|^USER 10001:10001|USER 10002|' \
  "runAsUser 10001 is not the image's user 10002"
expect_problem "a health check on a route needing a token" 's|/health/live|/v1/accounts|' \
  "/v1/accounts is no token-free GET route"
expect_problem "a health check on another port" 's|LEDGER_HTTP_PORT:-8080|LEDGER_HTTP_PORT:-9090|' \
  "asks port 9090, not serve's 8080"
expect_problem "no health check" '/^HEALTHCHECK/,/CMD curl/d' "no HEALTHCHECK"
expect_problem "a fixed base" 's|^FROM ${BASE_IMAGE}$|FROM debian:bookworm|' \
  "starts FROM debian:bookworm, not the BASE_IMAGE argument"
expect_problem "no base argument" '/^ARG BASE_IMAGE=/d' "no \`ARG BASE_IMAGE=debian:bookworm-slim\`"
expect_problem "a library package missing" 's| librocksdb7.8 | |' \
  "librocksdb.so.7.8 of package librocksdb7.8"
expect_problem "the PostgreSQL client in the runtime" 's|ca-certificates curl|ca-certificates curl postgresql-client-15|' \
  "installs postgresql-client-15"
expect_problem "an environment variable nothing reads" 's|LEDGER_HTTP_HOST=0.0.0.0|LEDGER_HTTP_HOSTNAME=0.0.0.0|' \
  "ENV LEDGER_HTTP_HOSTNAME: neither ledger nor ledger serve reads it"
expect_problem "recommends installed" 's|apt-get install -y --no-install-recommends|apt-get install -y|' \
  "apt-get install without --no-install-recommends"
expect_problem "apt lists left in the image" 's|&& rm -rf /var/lib/apt/lists/\*$|\&\& true|' \
  "apt-get update without removing /var/lib/apt/lists"
expect_problem "the whole project built" 's|--target ledger ||' "does not build only the ledger target"
expect_problem "the sources copied into the runtime" 's|^COPY --from=build /build/app/ledger /usr/bin/ledger|&\nCOPY . /src|' \
  "copies from the build context"
expect_problem "build trees in the context" '/^build$/d' "does not leave build out" .dockerignore

echo "$cases mutations, $failures not caught"
[ "$failures" -eq 0 ]
