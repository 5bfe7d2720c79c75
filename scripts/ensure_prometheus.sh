#!/usr/bin/env bash
# The Prometheus server (and promtool) for tests/integration/test_prometheus_server.py and deploy/ checks:
# Debian's prometheus package. Installed like Java (scripts/ensure_java.sh): only when missing,
# only with apt-get as root; otherwise say how.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Prometheus not found: installing Debian's prometheus package" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package enables a system service; the tests start their own servers on free ports.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  exit 0
fi
echo "The Prometheus tests need prometheus and promtool on PATH. Install them (Debian/Ubuntu: apt-get install prometheus; macOS: brew install prometheus), then run this again." >&2
exit 1
