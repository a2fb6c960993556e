"""``ocibox copy``, ``inspect``, ``list-tags``, ``delete``, ``login``, ``logout``,
``manifest-digest``: skopeo's commands, with skopeo's flags where they apply."""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import UsageError


def _bool_option(name: str, help: str):
    # skopeo style: --src-tls-verify, --src-tls-verify=false
    return click.option(name, type=click.BOOL, default=None, is_flag=False, flag_value=True,
                        metavar="BOOL", help=help)


def _side_options(prefix: str, side: str):
    """--{prefix}tls-verify, --{prefix}creds, --{prefix}cert-dir, --{prefix}no-creds."""
    def deco(f):
        for opt in reversed([
            _bool_option(f"--{prefix}tls-verify", f"Require HTTPS and verify certificates ({side})."),
            click.option(f"--{prefix}creds", metavar="USER[:PASSWORD]", help=f"Credentials ({side})."),
            click.option(f"--{prefix}cert-dir", metavar="DIR",
                         help=f"CA certificates (*.crt) and client keys (*.cert, *.key) ({side})."),
            click.option(f"--{prefix}no-creds", is_flag=True, help=f"Access the registry anonymously ({side})."),
            click.option(f"--{prefix}registry-token", metavar="TOKEN", help=f"A bearer token to send ({side})."),
        ]):
            f = opt(f)
        return f
    return deco


def _options(tls_verify, creds, cert_dir, no_creds, token=None, retries: int | None = None):
    from ..distribution.auth import Credentials
    from ..distribution.options import Options

    if sum(map(bool, (creds, no_creds, token))) > 1:
        raise UsageError("--creds, --no-creds and --registry-token exclude each other")
    options = Options(
        tls_verify=tls_verify,
        creds=Credentials.parse(creds) if creds else None,
        cert_dir=cert_dir,
        no_auth_lookup=no_creds,
        registry_token=token,
    )
    if retries is not None:
        options.retries = retries
    return options


retry_option = click.option("--retry-times", "retries", type=click.IntRange(0, 20), default=None,
                            metavar="N", help="Retries after 5xx, 429 or a dropped connection (default 3).")


def _authfile(path: str | None) -> None:
    if path:
        os.environ["REGISTRY_AUTH_FILE"] = path


authfile_option = click.option("--authfile", metavar="FILE",
                               help="Credentials file (default: containers auth.json, then ~/.docker/config.json).")


def _platform(platform, os_name, arch, variant):
    from ..image.models import Platform

    if platform:
        return Platform.parse(platform)
    if os_name or arch or variant:
        host = Platform.host()
        return Platform(os=os_name or host.os, architecture=arch or host.architecture,
                        variant=variant or (host.variant if not arch else None))
    return None


def _platform_options(f):
    for opt in reversed([
        click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Image to pick from a multi-arch index."),
        click.option("--override-os", metavar="OS", help="As skopeo: the OS to pick."),
        click.option("--override-arch", metavar="ARCH", help="As skopeo: the architecture to pick."),
        click.option("--override-variant", metavar="VARIANT", help="As skopeo: the variant to pick."),
    ]):
        f = opt(f)
    return f


class _Lines:
    """A line per finished blob on a pipe or a terminal (stderr)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            click.echo(line, err=True)


class _Bars:
    """On a terminal: a bar per blob in flight, redrawn at most ten times a second;
    finished blobs and other messages scroll above the bars."""

    WIDTH = 30

    def __init__(self, stream=None) -> None:
        import time

        self.stream = stream or sys.stderr
        self.active: dict[str, list[int]] = {}  # digest -> [done, size]
        self.drawn = 0
        self.last = 0.0
        self.clock = time.monotonic

    def _line(self, dig: str, done: int, size: int) -> str:
        frac = min(done / size, 1.0) if size else 1.0
        fill = int(frac * self.WIDTH)
        return (f"Copying blob {dig.split(':', 1)[-1][:12]} [{'=' * fill}{' ' * (self.WIDTH - fill)}] "
                f"{done / 1048576:7.1f} / {size / 1048576:.1f} MiB")

    def _draw(self, messages: tuple[str, ...] = (), force: bool = False) -> None:
        now = self.clock()
        if not force and not messages and now - self.last < 0.1:
            return
        self.last = now
        out = []
        if self.drawn:
            out.append(f"\x1b[{self.drawn}F\x1b[J")  # up to the first bar, clear below
        out.extend(m + "\n" for m in messages)
        lines = [self._line(d, done, size) for d, (done, size) in self.active.items()]
        out.extend(x + "\n" for x in lines)
        self.drawn = len(lines)
        self.stream.write("".join(out))
        self.stream.flush()

    def report(self, line: str) -> None:
        self._draw((line,), force=True)

    def progress(self, event: str, desc, n: int) -> None:
        if event == "start":
            self.active[desc.digest] = [0, desc.size]
            self._draw(force=True)
        elif event == "bytes" and desc.digest in self.active:
            self.active[desc.digest][0] += n
            self._draw()
        elif event == "done":
            self.active.pop(desc.digest, None)
            self._draw(force=True)


def _reporters(quiet: bool):
    """(report, progress) for CopyOptions: bars on a terminal, lines on a pipe, nothing if quiet."""
    if quiet:
        return None, None
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        bars = _Bars()
        return bars.report, bars.progress
    return _Lines(False), None


# --- copy --------------------------------------------------------------------------


def _transfer_options(f):
    """The options copy and sync share: both sides' access, platform, format, retries, quiet."""
    for option in reversed((
        _side_options("src-", "source"),
        _side_options("dest-", "destination"),
        authfile_option,
        click.option("-a", "--all", "all_images", is_flag=True,
                     help="Copy every image of an index, and the index."),
        _platform_options,
        click.option("-f", "--format", "fmt", type=click.Choice(["oci", "v2s2"]),
                     help="Manifest format at the destination."),
        click.option("--preserve-digests", is_flag=True, help="Fail rather than change any digest."),
        retry_option,
        click.option("-q", "--quiet", is_flag=True, help="No progress output."),
    )):
        f = option(f)
    return f


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@_transfer_options
@click.option("--dest-compress-format", type=click.Choice(["gzip", "zstd"]),
              help="Compress every layer with this (recompressing those compressed otherwise).")
@click.option("--dest-compress", is_flag=True,
              help="Compress uncompressed layers for any destination (docker:// always gets them compressed).")
@click.option("--dest-decompress", is_flag=True, help="Store layers uncompressed.")
@click.option("--dest-compress-level", type=click.IntRange(-7, 22), metavar="LEVEL",
              help="Compression level (gzip 1-9, zstd 1-22).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Blobs copied at once.")
@click.option("--digestfile", metavar="FILE", help="Write the digest of the copied manifest to FILE.")
@click.option("--additional-tag", "additional_tags", multiple=True, metavar="NAME:TAG",
              help="Another tag for the image in a docker-archive: destination (repeatable).")
@click.option("--referrers", is_flag=True,
              help="Also copy the artifacts that refer to the image (signatures, SBOMs), and theirs.")
@click.option("--remove-signatures", is_flag=True,
              help="Accepted for skopeo's sake: ocibox copies no signatures (except as --referrers).")
@click.option("--multi-arch", type=click.Choice(["system", "all", "index-only"]),
              help="As skopeo: the host's image (system), every image (all, as --all), or the index alone.")
def copy_cmd(source, destination, **kw):
    """Copy an image from SOURCE to DESTINATION (docker://, oci:, oci-archive:, docker-archive:, dir:)."""
    from ..transport.copy import CopyOptions, copy

    _authfile(kw["authfile"])
    report, progress = _reporters(kw["quiet"])
    if kw["multi_arch"] and kw["all_images"]:
        raise UsageError("--all and --multi-arch exclude each other", hint="--all is --multi-arch all")
    options = CopyOptions(
        all_images=kw["all_images"] or kw["multi_arch"] == "all", index_only=kw["multi_arch"] == "index-only",
        referrers=kw["referrers"], remove_signatures=kw["remove_signatures"],
        platform=_platform(kw["platform"], kw["override_os"], kw["override_arch"], kw["override_variant"]),
        format=kw["fmt"], compress=kw["dest_compress_format"], force_compress=kw["dest_compress"],
        decompress=kw["dest_decompress"], compress_level=kw["dest_compress_level"],
        preserve_digests=kw["preserve_digests"], jobs=kw["jobs"], additional_tags=list(kw["additional_tags"]),
        report=report, progress=progress,
        src_options=_side(kw, "src"), dst_options=_side(kw, "dest"),
    )
    result = copy(source, destination, options)
    if kw["digestfile"]:
        with open(kw["digestfile"], "w") as f:
            f.write(result.digest)
    if report:
        referrers = f", {result.referrers_copied} referrers" if kw["referrers"] else ""
        report(f"Copied {result.digest} ({result.blobs_copied} blobs copied, {result.blobs_skipped} present"
               f"{referrers})")


def _side(kw: dict, side: str):
    """Options for one side from the --src-*/--dest-* flags."""
    return _options(kw[f"{side}_tls_verify"], kw[f"{side}_creds"], kw[f"{side}_cert_dir"], kw[f"{side}_no_creds"],
                    kw[f"{side}_registry_token"], kw["retries"])


# --- inspect -------------------------------------------------------------------------


@click.command("inspect")
@click.argument("image")
@_side_options("", "registry")
@authfile_option
@_platform_options
@click.option("--raw", is_flag=True, help="Print the manifest (or index) bytes as they are.")
@click.option("--config", "show_config", is_flag=True, help="Print the image's config.")
@click.option("-n", "--no-tags", is_flag=True, help="Do not list the repository's tags.")
def inspect_cmd(image, tls_verify, creds, cert_dir, no_creds, registry_token, authfile, platform, override_os,
                override_arch, override_variant, raw, show_config, no_tags):
    """Show an image's manifest, config and metadata (skopeo inspect)."""
    import asyncio

    from ..transport.inspect import inspect

    _authfile(authfile)
    options = _options(tls_verify, creds, cert_dir, no_creds, registry_token)
    out = asyncio.run(inspect(_with_transport(image), options,
                              platform=_platform(platform, override_os, override_arch, override_variant),
                              raw=raw, config=show_config, tags=not no_tags))
    if isinstance(out, bytes):
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    else:
        click.echo(json.dumps(out, indent=4))


def _with_transport(image: str) -> str:
    from ..transport.locations import TRANSPORTS

    if image.partition(":")[0] in TRANSPORTS:
        return image
    return f"docker://{image}"


def _docker_ref(image: str, command: str):
    from ..distribution.reference import Reference

    image = _with_transport(image)
    if not image.startswith("docker://"):
        raise UsageError(f"{command} works on registries: expected docker://REFERENCE, got {image!r}")
    return Reference.parse(image[len("docker://"):])


# --- list-tags ---------------------------------------------------------------------


@click.command("list-tags")
@click.argument("repository")
@_side_options("", "registry")
@authfile_option
@click.option("--page-size", type=int, metavar="N", help="Ask for N tags per page.")
def list_tags_cmd(repository, tls_verify, creds, cert_dir, no_creds, registry_token, authfile, page_size):
    """List a repository's tags (skopeo list-tags)."""
    import asyncio

    from ..distribution.client import Registry

    _authfile(authfile)
    ref = _docker_ref(repository, "list-tags")
    if ref.tag or ref.digest:
        raise UsageError(f"{repository}: list-tags takes a repository, without a tag or digest")

    async def run():
        async with Registry(ref.api_host, _options(tls_verify, creds, cert_dir, no_creds, registry_token)) as reg:
            return await reg.list_tags(ref.repository, page_size)

    tags = asyncio.run(run())
    click.echo(json.dumps({"Repository": ref.name, "Tags": tags}, indent=4))


# --- delete ------------------------------------------------------------------------


@click.command("delete")
@click.argument("image")
@_side_options("", "registry")
@authfile_option
def delete_cmd(image, tls_verify, creds, cert_dir, no_creds, registry_token, authfile):
    """Delete an image's manifest from a registry (skopeo delete)."""
    import asyncio

    from ..distribution.client import Registry
    from ..errors import ReferenceNotFound

    _authfile(authfile)
    ref = _docker_ref(image, "delete").defaulted()

    async def run():
        async with Registry(ref.api_host, _options(tls_verify, creds, cert_dir, no_creds, registry_token)) as reg:
            dig = ref.digest
            if dig is None:
                head = await reg.head_manifest(ref.repository, ref.tag)
                if head is None:
                    raise ReferenceNotFound(f"{ref}: manifest unknown")
                dig = head[0] or (await reg.get_manifest(ref.repository, ref.tag)).digest
            await reg.delete_manifest(ref.repository, dig)
            return dig

    click.echo(asyncio.run(run()), err=True)


# --- login / logout -----------------------------------------------------------------


@click.command("login")
@click.argument("registry")
@click.option("-u", "--username", metavar="USER")
@click.option("-p", "--password", metavar="PASSWORD")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@_bool_option("--tls-verify", "Require HTTPS and verify certificates.")
@click.option("--cert-dir", metavar="DIR", help="CA certificates and client keys.")
@authfile_option
def login_cmd(registry, username, password, password_stdin, tls_verify, cert_dir, authfile):
    """Check credentials against REGISTRY and store them in the containers auth.json."""
    import asyncio

    from ..distribution.auth import Credentials, store
    from ..distribution.client import Options, Registry

    _authfile(authfile)
    host = registry.removeprefix("docker://").removeprefix("https://").removeprefix("http://").split("/")[0]
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    creds = Credentials(username, password)
    options = Options(tls_verify=tls_verify, cert_dir=cert_dir, creds=creds)

    async def check():
        async with Registry("registry-1.docker.io" if host == "docker.io" else host, options) as reg:
            await reg.request("GET", "/v2/")

    asyncio.run(check())
    path = store(host, creds)
    click.echo(f"Login Succeeded! (credentials stored in {path})", err=True)


@click.command("logout")
@click.argument("registry")
@authfile_option
def logout_cmd(registry, authfile):
    """Remove stored credentials for REGISTRY."""
    from ..distribution.auth import auth_file_for_writing, remove
    from ..errors import NotFound

    _authfile(authfile)
    host = registry.removeprefix("docker://").split("/")[0]
    if not remove(host):
        raise NotFound(f"not logged in to {host} (in {auth_file_for_writing()})")
    click.echo(f"Removed login credentials for {host}", err=True)


# --- manifest-digest ----------------------------------------------------------------


@click.command("manifest-digest")
@click.argument("manifest", type=click.Path(dir_okay=False))
def manifest_digest_cmd(manifest):
    """Print the digest of a manifest file."""
    from .. import digest as _digest
    from ..image.docker import check_not_schema1

    with open(manifest, "rb") as f:
        data = f.read(4 << 20)
    check_not_schema1(data, None, manifest)
    click.echo(_digest.of_bytes(data))


# --- sync ----------------------------------------------------------------------------


@click.command("sync")
@click.option("--src", "src_kind", type=click.Choice(["docker", "dir", "yaml"]), required=True,
              help="What SOURCE is: a repository, a directory of dir: images, or a YAML file.")
@click.option("--dest", "dst_kind", type=click.Choice(["docker", "dir"]), required=True,
              help="What DESTINATION is: a registry prefix or a directory.")
@click.argument("source")
@click.argument("destination")
@_transfer_options
@click.option("--scoped", is_flag=True, help="Keep the source's whole repository path under the destination, not only its last part.")
@click.option("--keep-going", is_flag=True, help="Go on after an image fails; exit non-zero at the end.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=6, show_default=True, help="Blobs at once.")
@click.option("--images", type=click.IntRange(1, 32), default=2, show_default=True, help="Images at once.")
def sync_cmd(src_kind, dst_kind, source, destination, src_tls_verify, src_creds, src_cert_dir,
             src_no_creds, src_registry_token, dest_tls_verify, dest_creds, dest_cert_dir, dest_no_creds,
             dest_registry_token, authfile,
             all_images, platform, override_os, override_arch, override_variant, fmt,
             preserve_digests, scoped, keep_going, jobs, images, retries, quiet):
    """Copy every image of SOURCE that DESTINATION lacks (skopeo sync)."""
    from ..errors import OciboxError
    from ..transport.copy import CopyOptions
    from ..transport.sync import SyncOptions, sync

    _authfile(authfile)
    report = _Lines(quiet)
    copy_options = CopyOptions(
        all_images=all_images, platform=_platform(platform, override_os, override_arch, override_variant),
        format=fmt, preserve_digests=preserve_digests, jobs=jobs,
        src_options=_options(src_tls_verify, src_creds, src_cert_dir, src_no_creds, src_registry_token,
                             retries),
        dst_options=_options(dest_tls_verify, dest_creds, dest_cert_dir, dest_no_creds, dest_registry_token,
                             retries))
    items = sync(src_kind, source, dst_kind, destination,
                 SyncOptions(copy=copy_options, scoped=scoped, images=images, keep_going=keep_going,
                             report=report))
    copied = sum(i.status == "copied" for i in items)
    skipped = sum(i.status == "skipped" for i in items)
    failed = [i for i in items if i.status.startswith("failed")]
    report(f"Synced {len(items)} images: {copied} copied, {skipped} up to date, {len(failed)} failed")
    if failed:
        raise OciboxError(f"{len(failed)} of {len(items)} images failed to sync (first: {failed[0].source})")
