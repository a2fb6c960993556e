"""What the two --systemd-cgroup VM tests share: systemd as PID 1 in a vmhost guest (v2, or
hybrid v1), a busybox bundle, runc and ours side by side, podman on top, and the records.

A test module writes only its own part of the guest script (sh) and its asserts:

    SCRIPT = r'''
    for RT in runc ocibox; do
      R=$(runtime $RT)
      ...
      echo "$RT start rc=$?"            # a record: "RT WHAT VALUE"
    done
    podman_both -p Slice -p MemoryMax   # podman --cgroup-manager=systemd, runc then ours
    '''
    out, text = boot_systemd(tmp_path_factory, script(SCRIPT, props=..., files=..., resources=...))

The prelude (HEAD) sets SRC and PY (the checkout's source and this interpreter), W (the
work directory) and B (the bundle, runc spec's with the given resources, also kept as
$W/config.base), and defines runtime, podman_both and ours_log.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import vmhost

import ocibox

SRC = Path(ocibox.__file__).resolve().parent.parent

HEAD = r"""
set -u
SRC=@SRC@
PY=@PY@
W=/var/lib/ocibox-vm  # not /tmp: units started later may mount a tmpfs there
B=$W/bundle
mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/dev $B/rootfs/sys $B/rootfs/tmp
cp /bin/busybox $B/rootfs/bin/busybox
for a in sh sleep cat true; do ln -s busybox $B/rootfs/bin/$a; done
cd $B && runc spec && cd /
$PY - <<'EOF'
import json
p = "/var/lib/ocibox-vm/bundle/config.json"
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sleep", "1000"]
c["linux"]["resources"].update(@RESOURCES@)
c.update(@CONFIG@)
json.dump(c, open(p, "w"))
EOF
cp $B/config.json $W/config.base
runtime() {  # RT: the command line of runc or ours with --systemd-cgroup and a root of its own
  if [ $1 = runc ]; then echo "runc --root $W/root-$1 --systemd-cgroup"
  else echo "env PYTHONPATH=$SRC $PY -m ocibox.runtime.cli --root $W/root-$1 --systemd-cgroup --debug --log $W/ocibox.log"; fi
}
ours_log() {  # on a failure, the debug log of ours says where
  if grep -q 'level=error' $W/ocibox.log; then grep -v 'level=debug msg="init' $W/ocibox.log | tail -150 | sed 's/^/ocibox log /'; fi
}
podman_more() { :; }  # NAME ID: more records of podman's running container (a module's own)
podman_left() { :; }  # ID: what is left of the container's cgroup after rm (a module's own)
podman_both() {  # -p PROP...: podman with its systemd cgroup manager, runc then ours
  T=$W/pm
  mkdir -p $T/tmp
  tar -C $B/rootfs -cf $T/rootfs.tar .
  printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' > $T/containers.conf
  export CONTAINERS_CONF=$T/containers.conf
  printf '#!/bin/sh\nexec env PYTHONPATH=%s %s -m ocibox.runtime.cli "$@"\n' $SRC $PY > $T/ocibox
  chmod +x $T/ocibox
  PM="podman --root $T/root --runroot $T/run --tmpdir $T/tmp --storage-driver vfs --events-backend none --cgroup-manager systemd"
  $PM import -q $T/rootfs.tar localhost/bb > /dev/null; echo "host podman-import rc=$?"
  for RT in runc $T/ocibox; do
    N=$(basename $RT)
    ID=$($PM --runtime $RT run -d --network none --memory 64m --pids-limit 77 localhost/bb sleep 100)
    echo "$N podman-rund rc=$?"
    systemctl show "$@" libpod-$ID.scope | sed "s/^/$N podman-show /;s/$ID/ID/"
    podman_more $N $ID
    $PM --runtime $RT rm -f -t 0 $ID > /dev/null; echo "$N podman-rm rc=$?"
    echo "$N podman-after $(systemctl list-units --all --no-legend "libpod-$ID.scope" | wc -l) $(podman_left $ID)"
  done
}
"""


def script(body: str, *, props: tuple[str, ...], files: tuple[str, ...], resources: dict,
           config: dict | None = None) -> str:  # fmt: skip
    """HEAD and ``body``: the bundle's linux.resources updated with ``resources`` and its
    config with ``config``; @PROPS@ in the body becomes systemctl show's -p options for
    ``props``, @FILES@ the names in ``files``."""
    head = HEAD.replace("@RESOURCES@", repr(resources)).replace("@CONFIG@", repr(config or {}))
    body = body.replace("@PROPS@", " ".join(f"-p {p}" for p in props))
    body = body.replace("@FILES@", " ".join(files))
    return (head + body).replace("@SRC@", str(SRC)).replace("@PY@", sys.executable)


def boot_systemd(tmp_path_factory, text: str, records: tuple[str, ...] = ("runc", "ocibox"),
                 hybrid: bool = False, keep: str = "Traceback") -> tuple[dict, str]:  # fmt: skip
    """Boot with systemd as PID 1 running ``text`` (skipping, saying why, when that cannot
    be done here); return its records, {RT: {WHAT: [VALUE...]}} for each RT in ``records``
    (other lines are left out), and the whole output. The job directory is kept, to read,
    when the output matches ``keep`` (a regular expression: what a failure prints)."""
    vmhost.require(SRC, sys.executable, programs=("runc",))
    if not os.path.exists("/lib/systemd/systemd"):
        pytest.skip("systemd is not installed (apt-get install systemd)")
    r = vmhost.boot(text, init=["/lib/systemd/systemd", "--unit=vmhost.service"],
                    root_files=vmhost.SYSTEMD_UNIT, timeout=600, hybrid=hybrid,
                    job=tmp_path_factory.mktemp("vmjob"))  # fmt: skip
    assert r.returncode is not None, f"the VM did not finish:\n{r.console[-4000:]}"
    out: dict[str, dict[str, list[str]]] = {rt: {} for rt in records}
    for line in r.output.splitlines():
        rt, _, rest = line.partition(" ")
        what, _, value = rest.partition(" ")
        if rt in out:
            out[rt].setdefault(what, []).append(value)
    if not re.search(keep, r.output):
        shutil.rmtree(r.job, ignore_errors=True)
    return out, r.output


def props(rec: dict, what: str, rt: str) -> dict[str, str]:
    """The NAME=VALUE records of ``what`` (systemctl show's), sd-RT in them as ID."""
    got = dict(v.split("=", 1) for v in rec.get(what, []) if "=" in v and " " not in v.split("=")[0])
    return {k: v.replace(f"sd-{rt}", "ID") for k, v in got.items()}
