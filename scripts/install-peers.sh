#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo drive, when missing.
set -euo pipefail
packages=(skopeo umoci oci-image-tool busybox-static runc attr docker-registry podman wrk containerd
          qemu-system-x86 linux-image-amd64 uidmap systemd dbus catatonit criu
          containernetworking-plugins iproute2)

# podman's default ulimits (nofile 1048576) are above these machines' hard limits, and
# raising a hard limit needs CAP_SYS_RESOURCE, which is missing: every `podman run` then
# fails in runc with "error setting rlimits". Give it defaults within the current hard
# limits, unless containers.conf already sets default_ulimits.
containers_conf() {
  local conf=${CONTAINERS_CONF_PATH:-/etc/containers/containers.conf}
  [ -f "$conf" ] && grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=' "$conf" && return 0
  if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$conf")" ]; then
    echo "install-peers: $conf lacks default_ulimits (podman run fails); run as root to set them" >&2
    return 0
  fi
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] || [ "$nofile" -gt 20000 ] && nofile=20000
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  local line="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
  mkdir -p "$(dirname "$conf")"
  if [ -f "$conf" ] && grep -Eq '^[[:space:]]*\[containers\]' "$conf"; then
    sed -i -E "0,/^[[:space:]]*\[containers\]/s//&\n$line/" "$conf"
  else
    [ -s "$conf" ] && printf '\n' >> "$conf"
    printf '[containers]\n%s\n' "$line" >> "$conf"
  fi
  echo "install-peers: set podman's $line in $conf"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  containers_conf
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-peers: missing ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "install-peers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
containers_conf
