"""ocibox-runtime --help, help COMMAND and COMMAND --help: every command and flag explained."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ocibox.runtime import cli, cli_help

OURS = [sys.executable, "-m", "ocibox.runtime.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*OURS, *args], capture_output=True, text=True, timeout=30)


def test_global_help_lists_every_command_and_global_flag():
    p = run("--help")
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    for cmd in cli._COMMANDS:
        assert any(line.split()[:1] == [cmd] and len(line.split()) > 1 for line in lines), cmd
    for flag in cli._GLOBAL:
        assert any(line.strip().startswith(flag + " ") for line in lines), flag
    assert run().stdout == p.stdout == run("help").stdout


@pytest.mark.parametrize("cmd", sorted(cli._COMMANDS))
def test_each_command_explains_each_of_its_flags(cmd):
    p = run(cmd, "--help")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert run("help", cmd).stdout == run(cmd, "-h").stdout == p.stdout
    text = p.stdout
    assert text.startswith(f"usage: ocibox-runtime {cmd}")
    assert cli_help.COMMANDS[cmd] in text
    explained = {}  # flag name -> its description
    for line in text.splitlines():
        if line.startswith("  -"):
            left, _, description = line.strip().partition("  ")
            for name in left.split(", "):
                explained[name.split(" ")[0]] = description.strip()
    for flag in cli._COMMANDS[cmd][0]:
        assert len(explained.get(flag, "")) > 5, f"{cmd} {flag} has no help line"

def test_help_for_an_unknown_command_is_a_usage_error():
    p = run("help", "nope")
    assert p.returncode == 2 and p.stdout == ""
    assert "no such command 'nope'" in p.stderr


def test_global_help_flag_before_a_command_gives_that_commands_help():
    # The word after --help is the command (not a topic after "help"), as runc 1.1's
    # `runc --help exec` names exec.
    p = run("--help", "exec", "foo")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == run("exec", "--help").stdout
    assert run("--help", "nope").returncode == 2


def test_exec_cgroup_help_says_a_bare_path_is_every_hierarchy_and_alone():
    text = run("exec", "--help").stdout
    line = next(line for line in text.splitlines() if line.strip().startswith("--cgroup "))
    assert "every hierarchy" in line and "only --cgroup" in line, line
