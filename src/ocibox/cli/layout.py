"""``ocibox layout ...``: OCI image layouts, with umoci's command meanings."""

from __future__ import annotations

import json

import click

from ..errors import UsageError

DEFAULT_TAG = "latest"


def split_image(value: str, *, tag_required: bool = False) -> tuple[str, str]:
    """``DIR[:TAG]`` -> (DIR, TAG). The tag is after the last ':' when it holds no '/'."""
    path, sep, tag = value.rpartition(":")
    if not sep or not path or "/" in tag:
        if tag_required:
            raise UsageError(f"--image {value!r}: expected DIR:TAG")
        return value, DEFAULT_TAG
    if not tag:
        raise UsageError(f"--image {value!r}: empty tag after ':'")
    return path, tag


def _open(path: str):
    from ..image.layout import Layout

    return Layout.open(path)


def _platform(value: str | None):
    if value is None:
        return None
    from ..image.models import Platform

    return Platform.parse(value)


image_option = click.option("--image", "image", required=True, metavar="DIR[:TAG]",
                            help="Layout directory and tag (default tag: latest).")
platform_option = click.option("--platform", metavar="OS/ARCH[/VARIANT]",
                               help="Which image of a multi-platform index (default: this machine's).")


@click.group()
def layout() -> None:
    """OCI image layouts: create, unpack, repack, configure, tag, collect garbage."""


@layout.command()
@click.option("--layout", "path", required=True, metavar="DIR", help="Directory to create.")
def init(path: str) -> None:
    """Create an empty OCI image layout."""
    from ..image.layout import Layout

    Layout.init(path)


@layout.command()
@image_option
@platform_option
def new(image: str, platform: str | None) -> None:
    """Create an image with no layers and an empty config."""
    from ..image.mutate import new_image

    path, tag = split_image(image, tag_required=True)
    new_image(_open(path), tag, _platform(platform))


@layout.command(name="import")
@image_option
@click.argument("source", metavar="ROOTFS_DIR_OR_TAR")
@click.option("--compress", type=click.Choice(["gzip", "zstd", "none"]), default="gzip", show_default=True)
@click.option("--history.created_by", "created_by", help="created_by of the new history entry.")
def import_(image: str, source: str, compress: str, created_by: str | None) -> None:
    """Add a directory or tar archive as a new layer (starting the image if it does not exist)."""
    from ..image.layout import Layout
    from ..image.mutate import history_entry, import_rootfs

    path, tag = split_image(image, tag_required=True)
    history = history_entry(created_by) if created_by else None
    import_rootfs(Layout.open_or_init(path), tag, source, compression=compress, history=history)


@layout.command()
@image_option
@platform_option
@click.option("--rootless", is_flag=True, default=None,
              help="Do not chown or make devices (default when not root).")
@click.argument("bundle")
def unpack(image: str, bundle: str, platform: str | None, rootless: bool | None) -> None:
    """Unpack an image into a runtime bundle (rootfs/ and config.json)."""
    from ..image.bundle import unpack as do_unpack

    path, tag = split_image(image)
    do_unpack(_open(path), tag, bundle, rootless=rootless, platform=_platform(platform))


def history_options(f):
    for name in ("comment", "created_by", "author", "created"):
        f = click.option(f"--history.{name}", f"history_{name}", metavar="TEXT",
                         help=f"{name} of the history entry.")(f)
    return click.option("--no-history", is_flag=True, help="Add no history entry.")(f)


def _history(kw: dict, default: str, *, empty_layer: bool = False):
    from ..image.mutate import history_entry

    if kw.pop("no_history", False):
        for name in ("comment", "created_by", "author", "created"):
            kw.pop(f"history_{name}", None)
        return None
    return history_entry(kw.pop("history_created_by") or default,
                         comment=kw.pop("history_comment"), author=kw.pop("history_author"),
                         created=kw.pop("history_created"), empty_layer=empty_layer)


@layout.command()
@image_option
@click.argument("bundle")
@click.option("--compress", type=click.Choice(["gzip", "zstd", "none"]), default="gzip", show_default=True)
@click.option("--refresh-bundle/--no-refresh-bundle", default=True, show_default=True,
              help="Afterwards, count the bundle as unpacked from the new image.")
@history_options
def repack(image: str, bundle: str, compress: str, refresh_bundle: bool, **kw) -> None:
    """Store a bundle's rootfs changes as one new layer and tag the result."""
    from ..image.bundle import repack as do_repack

    path, tag = split_image(image)
    history = _history(kw, f"ocibox layout repack {bundle}")
    if history is None:
        raise UsageError("repack always adds a layer, and a layer needs a history entry; drop --no-history")
    do_repack(_open(path), tag, bundle, compression=compress, history=history, refresh=refresh_bundle)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"{what} {v!r}: expected KEY=VALUE")
        key, value = v.split("=", 1)
        out[key] = value
    return out


@layout.command()
@image_option
@platform_option
@click.option("--tag", "new_tag", help="Tag the result with this name instead of replacing TAG.")
@click.option("--config.user", "user")
@click.option("--config.env", "env", multiple=True, metavar="KEY=VALUE")
@click.option("--config.entrypoint", "entrypoint", multiple=True, help="Repeat for each argument.")
@click.option("--config.cmd", "cmd", multiple=True, help="Repeat for each argument.")
@click.option("--config.workingdir", "workdir")
@click.option("--config.label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--config.exposedports", "ports", multiple=True, metavar="PORT[/PROTO]")
@click.option("--config.volume", "volumes", multiple=True, metavar="PATH")
@click.option("--config.stopsignal", "stop_signal")
@click.option("--author")
@click.option("--created", help="RFC 3339 time.")
@click.option("--os", "os_")
@click.option("--architecture")
@click.option("--manifest.annotation", "annotations", multiple=True, metavar="KEY=VALUE")
@click.option("--clear", multiple=True, metavar="FIELD",
              help="Empty a field first: config.labels, config.env, config.exposedports, "
                   "config.volume, config.entrypoint, config.cmd, manifest.annotations.")
@history_options
def config(image, platform, new_tag, user, env, entrypoint, cmd, workdir, labels, ports, volumes,
           stop_signal, author, created, os_, architecture, annotations, clear, **kw) -> None:
    """Change an image's configuration."""
    from ..image.mutate import ConfigEdit, edit_config

    path, tag = split_image(image)
    edit = ConfigEdit(
        user=user, env=list(env), workdir=workdir, labels=_pairs(labels, "--config.label"),
        entrypoint=list(entrypoint) if entrypoint else None, cmd=list(cmd) if cmd else None,
        exposed_ports=list(ports), volumes=list(volumes), stop_signal=stop_signal, author=author,
        created=created, os=os_, architecture=architecture,
        manifest_annotations=_pairs(annotations, "--manifest.annotation"), clear=list(clear))
    history = _history(kw, "ocibox layout config", empty_layer=True)
    edit_config(_open(path), tag, edit, new_tag=new_tag, history=history, platform=_platform(platform))


@layout.command(name="ls")
@click.option("--layout", "path", required=True, metavar="DIR")
def ls(path: str) -> None:
    """List the tags of a layout."""
    for name in sorted({name for name, _ in _open(path).refs()}):
        click.echo(name)


@layout.command()
@image_option
@click.argument("new_tag")
def tag(image: str, new_tag: str) -> None:
    """Give the image DIR:TAG another tag."""
    path, old = split_image(image)
    lay = _open(path)
    lay.tag(new_tag, lay.resolve(old))


@layout.command()
@image_option
def rm(image: str) -> None:
    """Remove a tag (its blobs stay until gc)."""
    path, tag_ = split_image(image, tag_required=True)
    _open(path).untag(tag_)


@layout.command()
@click.option("--layout", "path", required=True, metavar="DIR")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(path: str, dry_run: bool) -> None:
    """Remove blobs that no tag reaches."""
    removed = _open(path).gc(dry_run=dry_run)
    if dry_run:
        for d in removed:
            click.echo(d)


@layout.command()
@image_option
@platform_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(image: str, platform: str | None, as_json: bool) -> None:
    """Show an image's manifest, config and history."""
    from ..image.mutate import describe

    path, tag_ = split_image(image)
    info = describe(_open(path), tag_, _platform(platform))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    c = info["config"]
    click.echo(f"Image:     {path}:{tag_}")
    click.echo(f"Digest:    {info['digest']}")
    click.echo(f"Platform:  {info['platform']}")
    click.echo(f"Created:   {info['created'] or '-'}")
    if info["author"]:
        click.echo(f"Author:    {info['author']}")
    click.echo(f"Size:      {_human(info['size'])} in {len(info['layers'])} layers")
    for label, key in (("User", "User"), ("WorkingDir", "WorkingDir"), ("StopSignal", "StopSignal")):
        if c.get(key):
            click.echo(f"{label + ':':<11}{c[key]}")
    for label, key in (("Entrypoint", "Entrypoint"), ("Cmd", "Cmd")):
        if c.get(key):
            click.echo(f"{label + ':':<11}{json.dumps(c[key])}")
    for e in c.get("Env") or []:
        click.echo(f"Env:       {e}")
    for p in c.get("ExposedPorts") or {}:
        click.echo(f"Port:      {p}")
    for v in c.get("Volumes") or {}:
        click.echo(f"Volume:    {v}")
    for k, v in (c.get("Labels") or {}).items():
        click.echo(f"Label:     {k}={v}")
    click.echo("Layers:")
    for layer in info["layers"]:
        click.echo(f"  {layer['digest']}  {_human(layer['size']):>9}  {layer['mediaType']}")
    if info["history"]:
        click.echo("History:")
        for h in info["history"]:
            mark = "" if not h.get("empty_layer") else "  (no layer)"
            click.echo(f"  {h.get('created', '-')}  {h.get('created_by', '')}{mark}")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@layout.command()
@click.argument("path", metavar="DIR")
@click.option("--quick", is_flag=True, help="Check the JSON objects only, not every layer's bytes.")
def validate(path: str, quick: bool) -> None:
    """Check a layout and everything its index names against the image specification."""
    from ..image.check import check_layout

    problems = check_layout(path, verify_layers=not quick)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        from ..errors import LayoutError

        raise LayoutError(f"{path}: {len(problems)} problem(s) found")
    click.echo(f"{path}: valid")
