#!/usr/bin/env bash
# The main job, end to end: build a small busybox image in an OCI layout, check it
# with the peers, unpack it into a bundle, run it, change it, and repack the change.
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

say "unpack into a runtime bundle and run it"
ocibox layout unpack --image "$work/layout:demo" "$work/bundle"
ls "$work/bundle"
if [ "$(id -u)" -eq 0 ] && command -v runc >/dev/null; then
  # ocibox's own runtime is not written yet (issue 5): runc runs the bundle for now.
  (cd "$work/bundle" && sed -i 's/"terminal": true/"terminal": false/' config.json && runc run demo-$$)
else
  echo "(skipping the run: needs root and runc)"
fi

say "change the rootfs and repack the change as a new layer"
echo "added after unpack" > "$work/bundle/rootfs/etc/motd"
rm "$work/bundle/rootfs/bin/uname"
ocibox layout repack --image "$work/layout:demo-v2" "$work/bundle"
ocibox layout inspect --image "$work/layout:demo-v2" | sed -n '/Layers:/,$p'
ocibox layout ls --layout "$work/layout"
ocibox layout gc --layout "$work/layout"
echo
echo "demo done: layout in $work/layout"
