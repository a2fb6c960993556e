"""Linux mechanics of the runtime: system calls, namespaces, mounts, rootfs, capabilities.

Nothing here knows about container state directories or the command line; each
module turns one part of config.json into system calls.
"""
