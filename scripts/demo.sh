#!/usr/bin/env bash
# The main job, end to end: build a small busybox image in an OCI layout, check it
# with the peers, push it to the embedded registry, pull it back, unpack it into a
# bundle, run it, change it, and repack the change.
set -euo pipefail
work=${DEMO_DIR:-demo}
rm -rf "$work" && mkdir -p "$work"
say() { printf '\n== %s\n' "$*"; }

say "a root filesystem from busybox-static"
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$root/bin/busybox"
for a in sh ls cat echo id uname; do ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

say "ocibox layout: init, import, config"
ocibox layout init --layout "$work/layout"
ocibox layout import --image "$work/layout:demo" "$root"
ocibox layout config --image "$work/layout:demo" \
  --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo hello from $(uname -s) as $(id -un)' \
  --config.env GREETING=hello --config.label org.example.demo=yes
ocibox layout inspect --image "$work/layout:demo"
ocibox layout validate "$work/layout"

say "the peers read it: skopeo inspect, oci-image-tool validate"
skopeo inspect --format 'skopeo sees {{.Digest}} with {{len .Layers}} layer(s)' "oci:$work/layout:demo"
oci-image-tool validate --type image --ref name=demo "$work/layout" 2>&1 | tail -1

say "serve the embedded registry, push the image to it, pull it back"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ocibox registry serve --addr "127.0.0.1:$port" --root "$work/registry" 2> "$work/registry.log" &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
python - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the registry did not start: see registry.log")
PY
ocibox copy "oci:$work/layout:demo" "docker://127.0.0.1:$port/demo/busybox:1"
ocibox list-tags "docker://127.0.0.1:$port/demo/busybox"
ocibox copy "docker://127.0.0.1:$port/demo/busybox:1" "oci:$work/pulled:demo"
ocibox copy "docker://127.0.0.1:$port/demo/busybox:1" "docker-archive:$work/demo.tar:demo/busybox:1"
ocibox inspect "docker://127.0.0.1:$port/demo/busybox:1" | head -5

say "unpack the pulled image into a runtime bundle and run it"
ocibox layout unpack --image "$work/pulled:demo" "$work/bundle"
ls "$work/bundle"
if [ "$(id -u)" -ne 0 ]; then
  echo "(skipping the run: running a container needs root)"
elif command -v ocibox-runtime >/dev/null && ocibox-runtime --help >/dev/null 2>&1; then
  ocibox-runtime run --bundle "$work/bundle" "demo-$$"
else
  echo "(ocibox-runtime is not installed: running with runc)"
  runc run --bundle "$work/bundle" "demo-$$"
fi

say "change the rootfs and repack the change as a new layer"
echo "added after unpack" > "$work/bundle/rootfs/etc/motd"
rm "$work/bundle/rootfs/bin/uname"
ocibox layout repack --image "$work/pulled:demo-v2" "$work/bundle"
ocibox layout inspect --image "$work/pulled:demo-v2" | sed -n '/Layers:/,$p'
ocibox layout ls --layout "$work/pulled"
ocibox layout gc --layout "$work/pulled"
echo
echo "demo done: layouts in $work/layout and $work/pulled, registry data in $work/registry"
