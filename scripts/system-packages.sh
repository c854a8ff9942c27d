#!/usr/bin/env bash
# What the test suite needs from Debian's packages, installed when missing: Chromium (the
# batch page's browser test), PgBouncer (the service and flows behind a transaction-mode
# pooler), wrk (`rag bench load`), promtool from the prometheus package (the alert rules'
# checks and unit tests). Needs root or password-less sudo; without either it
# names what is missing and stops, rather than letting the tests fail one by one.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "system-packages: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
fi
echo "system-packages: installing ${need[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
# Debian starts the pooler's own service when it installs it; the tests start their own.
if [[ " ${need[*]} " == *" pgbouncer "* ]]; then
    "${as_root[@]}" service pgbouncer stop >/dev/null 2>&1 || true
fi
# Likewise a Prometheus server (port 9090) and its node exporter: only promtool is used.
if [[ " ${need[*]} " == *" prometheus "* ]]; then
    for unit in prometheus prometheus-node-exporter; do
        "${as_root[@]}" service "$unit" stop >/dev/null 2>&1 || true
    done
fi
