"""linux.memoryPolicy: the init's set_mempolicy, seen in the container's /proc/self/numa_maps."""

from __future__ import annotations

import os

import pytest

from ocibox.errors import BundleError
from ocibox.runtime.linux import mempolicy

pytestmark = [pytest.mark.root]

needs_numa = pytest.mark.skipif(
    not os.path.exists("/proc/self/numa_maps"), reason="the kernel has no NUMA support"
)
POLICY = "head -1 /proc/self/numa_maps | cut -d' ' -f2"


def _run(ours, bundle, policy):
    def edit(cfg):
        cfg["linux"]["memoryPolicy"] = policy

    b = bundle.write(["sh", "-c", POLICY], edit)
    return ours("run", "--bundle", b, ours.new_id(), check=False)


@needs_numa
@pytest.mark.parametrize(
    "policy,seen",
    [
        ({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
        ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
        ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, "interleave:0"),
        ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "bind=static:0"),
        ({"mode": "MPOL_LOCAL"}, "local"),
        ({"mode": "MPOL_DEFAULT"}, "default"),
    ],
)
def test_memory_policy_reaches_the_container_process(ours, bundle, policy, seen):
    p = _run(ours, bundle, policy)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == seen


def test_without_memory_policy_the_default_stays(ours, bundle):
    b = bundle.write(["sh", "-c", POLICY])
    p = ours("run", "--bundle", b, ours.new_id())
    assert p.stdout.strip() == "default"


def test_a_node_that_does_not_exist_is_refused_before_create(ours, bundle):
    p = _run(ours, bundle, {"mode": "MPOL_BIND", "nodes": "0,7"})
    assert p.returncode != 0
    assert "linux.memoryPolicy.nodes: node 7 does not exist here" in p.stderr
    assert ours("list", "-q").stdout.strip() == ""


@pytest.mark.parametrize(
    "policy,needle",
    [
        ({"mode": "MPOL_FANCY", "nodes": "0"}, "is not one of"),
        ({"mode": "MPOL_BIND"}, "needs nodes"),
        ({"mode": "MPOL_BIND", "nodes": "0-"}, "not a node list"),
        ({"mode": "MPOL_BIND", "nodes": "3-1"}, "bad node range"),
        ({"mode": "MPOL_LOCAL", "nodes": "0"}, "takes no nodes"),
        ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_FAST"]}, "flags"),
        ({"mode": "MPOL_BIND", "nodes": "0",
          "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}, "exclude each other"),
    ],
)  # fmt: skip
def test_bad_policies_are_refused(policy, needle):
    with pytest.raises(BundleError, match=needle):
        mempolicy.check(policy)


def test_node_lists():
    assert mempolicy.parse_nodes("0-2,5,1", "n") == [0, 1, 2, 5]


def test_features_lists_the_policies():
    from ocibox.runtime.features import features

    mp = features()["linux"]["memoryPolicy"]
    assert "MPOL_BIND" in mp["modes"] and "MPOL_F_STATIC_NODES" in mp["flags"]
