#!/usr/bin/env bash
# Installs Debian's `prometheus` package, which provides /usr/bin/prometheus and /usr/bin/promtool
# for the observability suites (test/e2e/serve/observability.test.ts, test/deploy/observability-tools.test.ts). Those suites FAIL under CI=1 when
# either binary is missing, so .ci/run calls this script before jest.
#
# The package's maintainer scripts would normally start a prometheus service; in CI there is no
# init system to start it with, and we never want a stray server listening on :9090, so service
# starts are denied through policy-rc.d for the duration of the install.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus

command -v prometheus >/dev/null
command -v promtool >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n1)"
