"""The OCI runtime specification: runtime configuration and the runtime itself.

- ``spec``: default config.json (what ``runc spec`` writes).
- ``container``: a container's state directory and the spec's state machine
  (``Container.load(root, id)`` then ``start``, ``kill``, ``pause``, ``resume``,
  ``delete``, ``oci_state``).
- ``create``: ``create(root, id, bundle)`` and ``run(...)``; ``exec``:
  ``build_process`` and ``exec_process``; ``stats``: ``update`` and ``stats``.
- ``process``: the forked intermediate and init processes; ``hooks``.
- ``linux``: namespaces, mounts, rootfs, devices, capabilities, rlimits,
  seccomp, cgroups (v1, v2 and hybrid; eBPF device programs), console, and the libc calls behind them.
- ``cli``: ``ocibox-runtime``, runc's command line.

Nothing is imported here on purpose: ``ocibox-runtime state`` must start fast,
and ``ocibox.runtime.spec`` is imported by the image converter.
"""
