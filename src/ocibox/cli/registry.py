"""``ocibox registry ...``: serve an OCI registry, collect its garbage."""

from __future__ import annotations

import json

import click

config_option = click.option("--config", "config_file", metavar="FILE",
                             help="Settings file, TOML (.toml) or JSON (.json); flags override it.")
root_option = click.option("--root", metavar="DIR",
                           help="Data directory (default: $XDG_DATA_HOME/ocibox/registry).")


def _config(config_file: str | None, **flags):
    from ..registry.config import load_config

    return load_config(config_file).updated(**flags)


@click.group()
def registry() -> None:
    """An OCI Distribution Specification v1.1 registry (what distribution and zot do)."""


@registry.command()
@click.option("--addr", metavar="HOST:PORT", help="Where to listen (default: 127.0.0.1:5000).")
@root_option
@config_option
@click.option("--no-delete", is_flag=True, default=None,
              help="Refuse deletes of manifests, tags and blobs (405 UNSUPPORTED).")
@click.option("--auth", type=click.Choice(["none", "htpasswd", "token"]),
              help="Basic auth from --htpasswd, or bearer tokens from the built-in /token endpoint.")
@click.option("--htpasswd", metavar="FILE", help="Users and bcrypt hashes (htpasswd -B).")
@click.option("--anonymous-pull", is_flag=True, default=None, help="Allow pulls without credentials.")
@click.option("--tls-cert", metavar="PEM", help="Serve HTTPS with this certificate (and --tls-key).")
@click.option("--tls-key", metavar="PEM", help="The certificate's private key.")
def serve(addr: str | None, root: str | None, config_file: str | None, no_delete: bool | None,
          auth: str | None, htpasswd: str | None, anonymous_pull: bool | None,
          tls_cert: str | None, tls_key: str | None) -> None:
    """Serve the registry until interrupted (SIGINT or SIGTERM).

    Settings come from the defaults, then --config FILE (TOML or JSON, keys as in
    ocibox.registry.config), then these flags.
    """
    from ..registry.server import serve as run

    config = _config(config_file, addr=addr, root=root,
                     delete_enabled=False if no_delete else None, auth=auth, htpasswd=htpasswd,
                     anonymous_pull=anonymous_pull, tls_cert=tls_cert, tls_key=tls_key)
    config.host_port()  # a bad address fails before anything starts

    def ready(port: int) -> None:
        scheme = "https" if config.tls_cert else "http"
        click.echo(f"ocibox registry: serving {config.root} on {scheme}://{config.host_port()[0]}:{port}",
                   err=True)

    from ..registry.app import make_guard

    make_guard(config)  # a bad auth setting (missing htpasswd file...) fails before listening
    run(config, ready)


@registry.command()
@root_option
@config_option
@click.option("--grace", type=float, metavar="SECONDS",
              help="Keep blobs and links younger than this (default: 3600).")
@click.option("--upload-ttl", type=float, metavar="SECONDS",
              help="Remove uploads idle for longer than this (default: 86400).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(root: str | None, config_file: str | None, grace: float | None, upload_ttl: float | None,
       dry_run: bool, as_json: bool) -> None:
    """Remove blobs no manifest references, and stale uploads (safe while serving)."""
    from ..registry.gc import collect_garbage
    from ..registry.storage.filesystem import FilesystemDriver

    config = _config(config_file, root=root, gc_grace=grace, upload_ttl=upload_ttl)
    report = collect_garbage(FilesystemDriver(config.root), grace=config.gc_grace,
                             upload_ttl=config.upload_ttl, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"marked": report.marked, "blobs_removed": report.blobs_removed,
                               "links_removed": report.links_removed,
                               "uploads_removed": report.uploads_removed,
                               "bytes_freed": report.bytes_freed, "dry_run": dry_run}))
        return
    verb = "would remove" if dry_run else "removed"
    for digest in report.blobs_removed:
        click.echo(f"{verb} {digest}")
    click.echo(f"{verb} {len(report.blobs_removed)} blobs ({report.bytes_freed} bytes), "
               f"{report.links_removed} links, {report.uploads_removed} uploads", err=True)


@registry.command()
@config_option
@click.argument("user")
@click.argument("repositories", nargs=-1, required=True)
def access(config_file: str | None, user: str, repositories: tuple[str, ...]) -> None:
    """Show what USER may do on each repository under the config's access rules.

    USER "anonymous" stands for requests without credentials.
    """
    from ..registry.auth import ANONYMOUS, Policy
    from ..registry.names import NAME

    config = _config(config_file)
    policy = Policy.from_settings(config.access, config.groups, config.anonymous_pull)
    who = None if user == ANONYMOUS else user
    for name in repositories:
        if not NAME.fullmatch(name):
            raise click.UsageError(f"{name!r} is not a repository name")
        actions = policy.actions(who, name)
        click.echo(f"{name}\t{','.join(a for a in ('pull', 'push', 'delete') if a in actions) or '-'}")
