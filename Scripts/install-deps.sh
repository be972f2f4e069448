#!/usr/bin/env bash
# Installs what RecServe needs on a Debian machine that has Swift: the C libraries (gRPC core,
# protobuf, OpenBLAS) and, with --test, the Python packages the test suite drives the server with.
# Installs only what is missing; runs `apt-get update` once, and only when something is missing.
set -euo pipefail

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

debs=(libgrpc++-dev libprotobuf-dev libopenblas-dev pkg-config)
# The tests open the pages RecServe writes and serves in headless Chromium, make TLS
# certificates with the openssl command, put HAProxy in front of several servers, and train ALS
# with Spark (Java) to export it.
((want_test)) && debs+=(chromium fonts-dejavu-core openssl haproxy default-jre-headless)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  if [[ "${RECSERVE_APT_UPDATED:-0}" != 1 ]]; then
    echo "install-deps: apt-get update" >&2
    $sudo apt-get update -q >/dev/null
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((want_test)); then
  py=(grpcio grpcio-tools grpcio-health-checking grpcio-reflection numpy pytest "pyspark>=3.5,<4")
  if ! python3 -c "import grpc, grpc_tools, grpc_health, grpc_reflection, numpy, pytest, pyspark" 2>/dev/null; then
    echo "install-deps: pip install ${py[*]}" >&2
    python3 -m pip install --quiet --disable-pip-version-check "${py[@]}"
  fi
fi
