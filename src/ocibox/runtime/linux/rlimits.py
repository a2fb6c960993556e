"""process.rlimits: setrlimit for each entry, failing clearly where the host forbids it."""

from __future__ import annotations

import resource

from ...errors import BundleError


def check(rlimits: list[dict]) -> None:
    """Refuse unknown and repeated types before anything is created."""
    seen = set()
    for i, r in enumerate(rlimits):
        name = r.get("type", "")
        if not (name.startswith("RLIMIT_") and hasattr(resource, name)):
            raise BundleError(f"config.json: process.rlimits[{i}]: unknown type {name!r}")
        if name in seen:
            raise BundleError(f"config.json: process.rlimits[{i}]: {name} given twice")
        seen.add(name)


def apply(rlimits: list[dict]) -> None:
    for i, r in enumerate(rlimits):
        name = r.get("type", "")
        num = getattr(resource, name, None) if name.startswith("RLIMIT_") else None
        if num is None:
            raise BundleError(f"config.json: process.rlimits[{i}]: unknown type {name!r}")
        soft, hard = _limit(r.get("soft", 0)), _limit(r.get("hard", 0))
        try:
            resource.setrlimit(num, (soft, hard))
        except (OSError, ValueError) as e:
            cur = resource.getrlimit(num)
            raise BundleError(
                f"setrlimit {name} {soft}:{hard}: {getattr(e, 'strerror', None) or e}",
                hint=f"the current limits are {cur[0]}:{cur[1]}; raising the hard limit "
                "needs CAP_SYS_RESOURCE",
            ) from None


def _limit(value: int) -> int:
    # The spec's uint64 maximum means "unlimited", which Python spells -1.
    return resource.RLIM_INFINITY if value >= 2**63 - 1 else value
