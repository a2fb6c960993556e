"""exec with a terminal asked for in --process, as containerd's shim does it.

containerd-shim-runc-v2 (``ctr task exec --tty``) writes the process with
``"terminal": true`` and runs ``exec --process FILE --detach --pid-file F
--console-socket S``, without ``--tty``; runc takes the terminal from the
process, and leaves /dev/console alone (it is the init's). A console socket for
a process without a terminal is refused by both.
"""

from __future__ import annotations

import json

import pytest
from test_lifecycle import _console_output

pytestmark = [pytest.mark.root]


def test_exec_terminal_from_process_file(both, bundle, tmp_path):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    proc = dict(bundle.config["process"], args=["sh", "-c", "tty; echo ok"], terminal=True)
    pfile = tmp_path / f"process-{both.name}.json"
    pfile.write_text(json.dumps(proc))
    sock = tmp_path / f"exec-{both.name}.sock"
    out = _console_output(both, cid, sock, ["exec", "--process", str(pfile), "--detach",
                                             "--console-socket", str(sock), cid])  # fmt: skip
    assert out.split()[0].startswith("/dev/pts/") and out.split()[-1] == "ok"
    # Again: the first exec's pty (gone now) was not bound onto /dev/console.
    sock2 = tmp_path / f"exec2-{both.name}.sock"
    out = _console_output(both, cid, sock2, ["exec", "--process", str(pfile), "--detach",
                                              "--console-socket", str(sock2), cid])  # fmt: skip
    assert out.split()[-1] == "ok"
    # No terminal in the process: a console socket is an error, and nothing runs.
    pfile.write_text(json.dumps(dict(proc, terminal=False, args=["touch", "/tmp/ran"])))
    p = both("exec", "--process", str(pfile), "--detach", "--console-socket", str(sock), cid,
             check=False)  # fmt: skip
    assert p.returncode != 0 and "console" in p.stderr.lower()
    assert both("exec", cid, "sh", "-c", "test -e /tmp/ran", check=False).returncode == 1
    both("delete", "--force", cid)
