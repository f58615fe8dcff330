#!/usr/bin/env bash
# Installs the Debian packages journey builds and tests with; a no-op for
# what is already there.  Run as root.
set -euo pipefail
packages=(make gcc postgresql-15 postgresql-server-dev-15 postgresql-15-cron
          libcurl4-openssl-dev libipc-run-perl python3 rsync)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postgresql-common would create and start a cluster on 5432;
    # journey's tests and demo run their own throwaway servers instead.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/journey-no-main.conf
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
