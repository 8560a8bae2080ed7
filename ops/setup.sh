#!/usr/bin/env bash
# Installs every Debian 12 package that building, running, testing and benchmarking ledger need.
# Idempotent: packages already present are skipped by apt-get; the package index is refreshed
# only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libpqxx-dev libpq-dev postgresql-15 postgresql-client-15
  librdkafka-dev
  librocksdb-dev
  flatbuffers-compiler libflatbuffers-dev
  libboost-dev libboost-system-dev
  libspdlog-dev libfmt-dev
  doctest-dev
  libcli11-dev
  libcpp-jwt-dev nlohmann-json3-dev
  rapidjson-dev
  libssl-dev
  curl procps python3 gnuplot-nox kcat python3-flatbuffers
  wrk  # bench: the HTTP load generator of the wrk rows (bench/wrk/transfers.lua)
  haproxy  # tests/app/two_serves_e2e_test.cpp and the bench's two-serves section: a real load balancer
  python3-confluent-kafka python3-numpy  # examples/consumers/python (docs/consumers.md)
  clang-14 libclang-rt-14-dev  # ops/fuzz.sh: libFuzzer, ASan and UBSan (linked with libstdc++)
  # tests/ops: the deployment files are checked by the tools that will read them
  systemd yamllint prometheus python3-yaml
)

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
