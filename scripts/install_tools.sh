#!/usr/bin/env bash
# Debian packages the test suite runs for real: Prometheus (server + promtool, for the alert rules
# and the health DAG's queries), the Pushgateway (where the health DAG publishes its decisions) and
# Chromium with its chromedriver (the browser tests of the Airflow UI).
# Installs only what is missing; needs root or sudo the first time.
set -euo pipefail

missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v redis-server >/dev/null || missing+=(redis-server)
# The browser tests drive Debian's Chromium headless through its chromedriver (no browser download).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "install ${missing[*]} (Prometheus 2.x: promtool, prometheus, pushgateway) and put them on PATH" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "run as root or install: apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
# The packages' own services are not wanted (the tests start their own servers on free ports).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
