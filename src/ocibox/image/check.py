"""Checking a whole layout: every object its index reaches, against the spec.

``check_layout`` collects problems instead of stopping at the first, so one
run tells the user everything that is wrong; each problem is one line that
names the object and the rule.
"""

from __future__ import annotations

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import OciboxError
from .layout import Layout
from .models import Descriptor, Index, Manifest


def check_layout(path: str, *, verify_layers: bool = True) -> list[str]:
    from . import validate as v

    problems: list[str] = []
    try:
        v.validate_layout_dir(path)
        layout = Layout.open(path)
        with open(f"{path}/index.json", "rb") as f:
            v.validate_index(f.read(), "index.json")
        roots = list(layout.index().manifests)
    except OciboxError as e:
        return [str(e)]
    seen: set[str] = set()
    for desc in roots:
        _check(layout, desc, seen, problems, verify_layers, f"index.json -> {desc.ref_name or desc.digest}")
    return problems


def _check(layout: Layout, desc: Descriptor, seen: set[str], problems: list[str],
           verify_layers: bool, trail: str) -> None:
    from . import validate as v

    if desc.digest in seen:
        return
    seen.add(desc.digest)
    try:
        if desc.media_type in mt.MANIFESTS | mt.INDEXES:
            data = layout.read_json_blob(desc, "manifest")
            if desc.media_type in mt.INDEXES:
                index: Index = v.validate_index(data, f"{trail}: index {desc.digest}")
                for child in index.manifests:
                    _check(layout, child, seen, problems, verify_layers, f"{trail} -> {child.digest[:19]}")
                return
            manifest: Manifest = v.validate_manifest(data, f"{trail}: manifest {desc.digest}")
            _check_image(layout, manifest, seen, problems, verify_layers, trail)
        else:
            _check_blob(layout, desc, verify=verify_layers or desc.size < (1 << 20))
    except OciboxError as e:
        problems.append(f"{trail}: {e}")


def _check_image(layout: Layout, manifest: Manifest, seen: set[str], problems: list[str],
                 verify_layers: bool, trail: str) -> None:
    from . import validate as v

    config = manifest.config
    diff_ids: list[str] | None = None
    if config.media_type in mt.CONFIGS:
        try:
            cfg = v.validate_config(layout.read_json_blob(config, "config"), f"{trail}: config {config.digest}")
            diff_ids = cfg.diff_ids
        except OciboxError as e:
            problems.append(f"{trail}: {e}")
        seen.add(config.digest)
        if diff_ids is not None and len(diff_ids) != len(manifest.layers):
            problems.append(f"{trail}: manifest has {len(manifest.layers)} layers but its config "
                            f"has {len(diff_ids)} diff_ids")
            diff_ids = None
    else:
        _check(layout, config, seen, problems, verify_layers, f"{trail} -> config")
    for i, layer in enumerate(manifest.layers):
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        where = f"{trail} -> layer {i + 1} {layer.digest}"
        try:
            if verify_layers and diff_ids is not None and mt.is_layer(layer.media_type):
                _check_layer(layout, layer, diff_ids[i])
            else:
                _check_blob(layout, layer, verify=verify_layers)
        except OciboxError as e:
            problems.append(f"{where}: {e}")


def _check_blob(layout: Layout, desc: Descriptor, *, verify: bool) -> None:
    if not verify:
        actual = layout.blobs.size(desc.digest)
        if actual != desc.size:
            from ..errors import SizeMismatch

            raise SizeMismatch(f"blob {desc.digest}", desc.size, actual)
        return
    with layout.blobs.open_verified(desc.digest, desc.size) as r:
        r.drain()
        r.verify()


def _check_layer(layout: Layout, desc: Descriptor, diff_id: str) -> None:
    """Verify the compressed bytes and the uncompressed diff_id in one pass."""
    from .compression import open_reader

    with layout.blobs.open_verified(desc.digest, desc.size) as blob:
        tar = _digest.VerifyingReader(open_reader(blob, mt.layer_compression(desc.media_type)),
                                      diff_id, None, "uncompressed layer (diff_id)")
        tar.drain()
        blob.drain()
        blob.verify()
        tar.verify()
