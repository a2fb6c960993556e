"""checkpoint and restore where criu works: a 6.1 kernel in a VM (tests/runtime/vmhost.py).

This host's kernel fails `criu check` (test_runtime_checkpoint.py covers that error). One
boot: the guest runs vm_checkpoint_guest.py, which checkpoints and restores a counting
busybox container (a bind mount, its own cgroup) under runc and under ocibox-runtime,
and records what happened; the tests below compare the records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import vmhost

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.root]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUNTIMES = ("runc", "ours")


@pytest.fixture(scope="module")
def vm(tmp_path_factory) -> dict:
    vmhost.require(REPO, programs=("runc", "criu"))
    job = tmp_path_factory.mktemp("vmjob")
    results = vmhost.run_driver(HERE / "vm_checkpoint_guest.py", REPO, job, timeout=900)
    for name in RUNTIMES:
        assert "error" not in results[name], f"{name}:\n{results[name]['error']}"
    return results


def test_criu_check_passes_in_the_guest(vm):
    assert vm["criu check"]["rc"] == 0, vm["criu check"]["out"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_checkpoint_stops_and_removes_the_container(vm, name):
    r = vm[name]
    assert r["run"]["rc"] == 0
    assert r["before"] >= 3  # it was counting
    assert r["checkpoint"]["rc"] == 0, (r["checkpoint"], r["dump_errors"])
    # As runc: the container is gone after the dump, and nothing counts any more.
    assert r["state_after_checkpoint"]["rc"] != 0
    assert "does not exist" in r["state_after_checkpoint"]["err"]
    assert r["later"] == r["after_checkpoint"]
    assert {"inventory.img", "pstree.img", "cgroup.img", "descriptors.json"} <= set(r["images"])


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_continues_the_count(vm, name):
    r = vm[name]
    assert r["restore"]["rc"] == 0, (r["restore"], r["restore_errors"])
    assert r["state_after_restore"]["status"] == "running"
    assert r["state_after_restore"]["pid"] > 0
    # The counter goes on from where it stopped (not from 0: the process was restored).
    assert r["first_after_restore"] >= r["later"]
    assert r["resumed"] > r["later"]
    # In the container's cgroup, which restore made again.
    assert r["cgroup_after_restore"] == f"/ckpt/{name}/c1"
    assert r["kill"]["rc"] == 0 and r["delete"]["rc"] == 0


@pytest.mark.parametrize("name", RUNTIMES)
def test_leave_running_keeps_it_running(vm, name):
    r = vm[name]
    assert r["leave_running"]["rc"] == 0, r["leave_running"]
    assert r["state_after_leave_running"] == "running"
    assert r["still_counting"]


def test_images_hold_what_runcs_do(vm):
    runc, ours = vm["runc"]["images"], vm["ours"]["images"]
    kinds = {name.split("-")[0].split(".")[0] for name in runc}
    assert kinds <= {name.split("-")[0].split(".")[0] for name in ours}


def test_checkpoint_of_a_created_container_is_refused(vm):
    for name in RUNTIMES:
        assert vm[name]["created_checkpoint"]["rc"] != 0
        assert "created" in vm[name]["created_checkpoint"]["err"]
    assert "cannot checkpoint container c3: it is created" in vm["ours"]["created_checkpoint"]["err"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_foreground_restore_waits_and_deletes(vm, name):
    r = vm[name]["foreground"]
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restore"]["rc"] == 7, r["restore"]  # the container's own exit status
    assert r["last"] == "7"  # it counted on to the end after the restore
    assert "does not exist" in r["state_after"]["err"]


def test_hooks_are_runcs(vm):
    runc, ours = vm["runc"], vm["ours"]
    # the dump destroys the container: poststop, without a pid
    assert ours["hooks_checkpoint"] == runc["hooks_checkpoint"] == [["poststop", "stopped", False]]
    # restore: prestart and createRuntime with the restored pid, no poststart
    kinds = [[kind, has_pid] for kind, _, has_pid in ours["hooks_restore"]]
    assert kinds == [[kind, has_pid] for kind, _, has_pid in runc["hooks_restore"]]
    assert kinds == [["prestart", True], ["createRuntime", True]]
    # The state on their stdin: runc 1.1.5 gives its current status, "stopped" (no init
    # yet); ours "creating", as at create: the spec's "stopped" is "the container process
    # has exited", which it has not (checkpoint._restore_hooks).
    assert [status for _, status, _ in runc["hooks_restore"]] == ["stopped", "stopped"]
    assert [status for _, status, _ in ours["hooks_restore"]] == ["creating", "creating"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_hooks_run_while_criu_restores(vm, name):
    # runc runs them at criu's setup-namespaces: the pid is the init's, which is then a
    # criu process still (the container's program is not restored yet), not sh.
    progs = vm[name]["hook_programs_restore"]
    assert [kind for kind, _ in progs] == ["prestart", "createRuntime"], progs
    assert [prog for _, prog in progs] == ["criu", "criu"], progs


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_failing_prestart_hook_fails_the_restore(vm, name):
    r = vm[name]["failing_hook"]
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restore"]["rc"] != 0
    assert "does not exist" in r["state"]["err"]
    assert not r["counting"]  # criu stopped the restore: no process runs on
    if name == "ours":
        assert "prestart hook 0 (/bin/sh)" in r["restore"]["err"], r["restore"]
        assert "no way" in r["restore"]["err"]
        assert not r["cgroup_left"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_without_cgroup_config_places_it_as_create_does(vm, name):
    # Neither linux.resources nor cgroupsPath: run gives <the runtime's cgroup>/<id>,
    # and so does restore, under runc and ours; what needs the cgroup works then.
    r = vm[name]["no_cgroup_config"]
    assert r["checkpoint"]["rc"] == 0 and r["restore"]["rc"] == 0, (r["checkpoint"], r["restore"])
    assert r["cgroup_at_run"].endswith("/nc"), r
    assert r["cgroup_after_restore"] == r["cgroup_at_run"], r
    assert r["cgroup_after_restore"] == vm["runc"]["no_cgroup_config"]["cgroup_after_restore"]
    assert r["ps"] == {"rc": 0, "has_init": True}, r
    assert (r["pause"], r["paused"], r["resume"]) == (0, "paused", 0), r
    assert r["kill_all"] == 0 and r["delete"] == 0, r
    assert not r["cgroup_left"], r


def test_no_hook_runs_when_criu_reaches_no_setup_namespaces(vm):
    # runc runs the restore hooks at criu's setup-namespaces notification only.
    r = vm["ours"]["hooks_without_setup_namespaces"]
    assert r["checkpoint"]["rc"] == 0 and r["restore"]["rc"] == 0, (r["checkpoint"], r["restore"])
    assert r["status"] == "running"
    assert r["hooks_restore"] == [], r


@pytest.mark.parametrize("key", ["runc to ours", "ours to runc"])
def test_images_restore_under_the_other_runtime(vm, key):
    r = vm[key]
    assert "error" not in r, r.get("error")
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restore"]["rc"] == 0, r["restore"]
    assert r["resumed"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_with_a_terminal_sends_a_new_one_to_the_console_socket(vm, name):
    r = vm[f"{name} terminal"]
    assert "error" not in r, r.get("error")
    assert r["run"]["rc"] == 0 and r["got_master"] and r["ticked"], r["run"]
    assert r["checkpoint"]["rc"] == 0, (r["checkpoint"], r["dump_errors"])
    assert r["restore"]["rc"] == 0, (r["restore"], r["restore_errors"])
    assert r["state"] == "running"
    assert r["got_master_after"]  # the restore sent a master to the new console socket
    # The output goes on through it from where it stopped (nothing lost, nothing again),
    # and what is typed reaches the process.
    assert r["ticked_after"], r["output_after"]
    assert min(r["ticks_after"]) == r["last_before"] + 1, r["output_after"]
    assert r["echoed"], r["output_after"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_restored_terminal_is_checkpointed_and_restored_again(vm, name):
    r = vm[f"{name} terminal"]
    assert r["checkpoint2"]["rc"] == 0, r["checkpoint2"]
    assert r["restore2"]["rc"] == 0, r["restore2"]
    assert r["ticked_after2"]
    assert min(r["ticks_after2"]) == r["last_before2"] + 1


@pytest.mark.parametrize("name", RUNTIMES)
def test_foreground_restore_with_a_terminal_joins_it_to_stdio(vm, name):
    r = vm[f"{name} terminal"]["foreground"]
    assert r["ticked"] and r["checkpoint"]["rc"] == 0, r["checkpoint"]
    # No console socket: the runtime copies between the new pty and its own terminal,
    # both ways, and returns the container's exit status (then it is gone).
    assert r["rc"] == 5, r["output"]
    assert r["ticks_after"] and min(r["ticks_after"]) == r["last_before"] + 1, r["output"]
    assert r["echoed"], r["output"]
    assert "does not exist" in r["state_after"]["err"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_checkpoint_to_a_page_server(vm, name):
    r = vm[name]["page_server"]
    assert r["server"] == 0  # criu page-server listens
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    # The memory went to the page server, not into --image-path.
    assert r["pages_at_server"] and not r["pages_here"], r
    assert r["restore"]["rc"] == 0, r["restore"]
    assert r["resumed"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_lazy_migration(vm, name):
    r = vm[name]["lazy"]
    assert r["ready"]  # a NUL on --status-fd once criu serves the pages
    assert r["restore"]["rc"] == 0, (r["restore"], r["restore_errors"])
    assert r["checkpoint_rc"] == 0, (r["checkpoint_err"], r["dump_errors"])
    assert r["lazy_pages_rc"] == 0
    assert r["state_new"] == "running"
    # The restored container counts on from the checkpointed one's memory, fetched lazily.
    assert r["count_before"] >= 2
    assert r["first_restored"] >= r["count_before"]
    # The checkpoint ended, and its container went, once all the pages were taken.
    assert "does not exist" in r["state_old"]["err"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_pre_dump_then_dump_with_auto_dedup(vm, name):
    r = vm[name]["pre_dump"]
    assert r["pre_dump"]["rc"] == 0, r["pre_dump"]
    assert r["state_after_pre_dump"] == "running"  # a pre-dump leaves it running
    assert r["dump"]["rc"] == 0, r["dump"]
    assert r["parent_link"]  # criu links the dump to its parent (--parent-path)
    # --auto-dedup punched out of the parent's pages what the dump took again.
    assert 0 < r["blocks_after"] < r["blocks_before"], r
    assert r["restore"]["rc"] == 0, r["restore"]
    assert r["resumed"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_hooks_with_a_noexec_work_path(vm, name):
    # ours has criu execute a script for the hooks: not from the noexec work path
    r = vm[name]["noexec_work"]
    assert r["mount"] == 0
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restore"]["rc"] == 0, r["restore"]
    assert r["hook_programs_restore"] == [["prestart", "criu"], ["createRuntime", "criu"]]
    assert r["resumed"]


@pytest.mark.parametrize("when", ["at_start", "in_hook"])
@pytest.mark.parametrize("name", RUNTIMES)
def test_a_killed_restorer_leaves_nothing_running(vm, name, when):
    # restore -d SIGKILLed as criu starts (a --criu that kills its parent, then execs
    # criu) or while the prestart hook runs (criu waiting at setup-namespaces)
    r = vm[name][f"killed_{when}"]
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restorer"] == -9
    assert r.get("in_hook", True)
    # Nothing restores on or waits for ever: no criu, no action script, nothing in the
    # container's cgroup. criu undoes the restore under runc (its RPC socket closes) and
    # ours (the action script fails: the restorer's pipes went with it).
    assert r["left"] == [], r["left"]
    assert not r["counting"]
    assert r["delete"]["rc"] == 0, r["delete"]
    assert r["left_after_delete"] == []
    if name == "ours":
        # criu undid the restore because the action script failed
        assert any("action scripts failed" in e for e in r["restore_errors"]), r["restore_errors"]
        # The state says what the restore had made; delete --force removes it all.
        assert r["state"]["status"] == "stopped" and r["state"]["pid"] == 0, r["state"]
        assert "restore.action.sh" in r["state_dir"]
        assert not r["cgroup_after_delete"]
        assert not r["state_dir_after_delete"]
        assert r["files_after_delete"] == []
    elif when == "in_hook":
        # runc 1.1.5 does not: its state directory keeps the criu-root mount (EBUSY),
        # and the cgroup it made stays.
        assert "criu-root: device or resource busy" in r["delete"]["err"], r["delete"]
        assert r["state_dir_after_delete"] and r["cgroup_after_delete"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_restore_takes_the_lsm_flags(vm, name):
    # --lsm-profile none:NAME and --lsm-mount-context, through to criu (the guest's
    # kernel shows no LSM: securityfs is not mounted; apparmor:/selinux: are refused)
    r = vm[name]["lsm"]
    assert r["checkpoint"]["rc"] == 0, r["checkpoint"]
    assert r["restore"]["rc"] == 0, (r["restore"], r["restore_errors"])
    assert r["resumed"]


def test_runcs_images_of_a_terminal_are_refused_by_ours(vm):
    r = vm["runc to ours terminal"]
    assert r["ticked"] and r["checkpoint"]["rc"] == 0, r
    assert "tty-info.img" in r["images"] and "tty.info" not in r["images"]
    assert r["restore"]["rc"] != 0
    # what failed, why, and what to do, before criu runs: nothing is left
    err = r["restore"]["err"]
    assert "its process has a terminal and the checkpoint was not made by ocibox-runtime" in err
    assert "hint: restore it with the runtime that checkpointed it (runc restore" in err
    assert "does not exist" in r["state"]["err"]
    assert not r["cgroup_left"]


def test_ours_images_of_a_terminal_under_runc(vm):
    # runc 1.1.5 cannot restore them: ours dumps /dev/console as an external mount
    # (criu's command line has no orphan-pts-master), which runc does not map back, so
    # criu stops ("No mapping for ...(null) mountpoint"); nothing is left.
    r = vm["ours to runc terminal"]
    assert r["ticked"] and r["checkpoint"]["rc"] == 0, r
    assert "tty.info" in r["images"]
    assert r["restore"]["rc"] != 0
    assert any("No mapping for" in e for e in r["restore_errors"]), r["restore_errors"]
    assert "does not exist" in r["state"]["err"]
    assert not r["cgroup_left"] and not r["got_master"]
