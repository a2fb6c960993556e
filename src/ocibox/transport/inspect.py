"""What ``ocibox inspect`` shows: skopeo inspect's fields for any location."""

from __future__ import annotations

import json
from typing import Any

from .. import mediatypes as mt
from ..distribution.options import Options
from ..image.models import Index, Manifest, Platform
from ._select import check_manifest_type as _check_manifest_type
from ._select import pick as _pick
from .locations import DockerLocation, parse_location


async def inspect(location: str, options: Options, *, platform: Platform | None = None,
                  raw: bool = False, config: bool = False, tags: bool = True) -> bytes | dict[str, Any]:
    loc = parse_location(location, options)
    await loc.open(writing=False)
    try:
        top = await loc.top()
        if raw and not config:
            return top.data
        _check_manifest_type(top.media_type, top.data, loc.name)
        data = top.data
        if top.media_type in mt.INDEXES:
            child = _pick(list(Index.from_bytes(data).manifests), platform or Platform.host(), loc.name)
            data = await loc.manifest(child)
        m = Manifest.from_bytes(data, f"{loc.name}: manifest")
        cfg_bytes = await loc.read_blob(m.config)
        if config:
            return cfg_bytes if raw else json.loads(cfg_bytes)
        cfg = json.loads(cfg_bytes) if m.config.media_type in mt.CONFIGS else {}
        inner = cfg.get("config") or {}
        out: dict[str, Any] = {"Name": loc.ref.name if isinstance(loc, DockerLocation) else loc.name,
                               "Digest": top.digest}
        if isinstance(loc, DockerLocation):
            if tags:
                out["RepoTags"] = await loc.registry.list_tags(loc.ref.repository)
        out.update({
            "Created": cfg.get("created"),
            "DockerVersion": cfg.get("docker_version", ""),
            "Labels": inner.get("Labels"),
            "Architecture": cfg.get("architecture"),
            "Os": cfg.get("os"),
            "Layers": [x.digest for x in m.layers],
            "LayersData": [{"MIMEType": x.media_type, "Digest": x.digest, "Size": x.size,
                            "Annotations": x.annotations} for x in m.layers],
            "Env": inner.get("Env"),
        })
        if cfg.get("variant"):
            out["Variant"] = cfg["variant"]
        return out
    finally:
        await loc.close(True)
