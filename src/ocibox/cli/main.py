"""The ``ocibox`` command: a thin face over the library.

Command groups are imported only when invoked, so ``ocibox layout ls`` does not
pay for the registry or HTTP code. Every ocibox error becomes one line on
stderr and a non-zero exit; a traceback means a bug in ocibox.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__

# name -> (module, attribute, help)
GROUPS = {
    "layout": ("ocibox.cli.layout", "layout", "OCI image layouts: init, unpack, repack, config, gc (umoci)."),
    "registry": ("ocibox.cli.registry", "registry", "Serve an OCI registry; collect its garbage (distribution, zot)."),
    "copy": ("ocibox.cli.images", "copy_cmd", "Copy an image between registries, layouts, archives and dirs (skopeo)."),
    "inspect": ("ocibox.cli.images", "inspect_cmd", "Show an image's manifest, config and tags (skopeo inspect)."),
    "list-tags": ("ocibox.cli.images", "list_tags_cmd", "List a repository's tags (skopeo list-tags)."),
    "delete": ("ocibox.cli.images", "delete_cmd", "Delete an image from a registry (skopeo delete)."),
    "login": ("ocibox.cli.images", "login_cmd", "Store credentials for a registry (containers auth.json)."),
    "logout": ("ocibox.cli.images", "logout_cmd", "Remove stored credentials for a registry."),
    "manifest-digest": ("ocibox.cli.images", "manifest_digest_cmd", "Print the digest of a manifest file."),
    "sync": ("ocibox.cli.images", "sync_cmd", "Copy the images a registry or directory lacks (skopeo sync)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(GROUPS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in GROUPS:
            return None
        module, attr, _ = GROUPS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, GROUPS[name][2]) for name in sorted(GROUPS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocibox")
def cli() -> None:
    """ocibox: OCI images, runtime and distribution in one toolkit."""


def main(argv: list[str] | None = None) -> None:
    from ..errors import OciboxError

    try:
        cli.main(args=argv, prog_name="ocibox", standalone_mode=False)
    except OciboxError as e:
        click.echo(f"ocibox: {e.message}", err=True)
        if e.hint:
            click.echo(f"  hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("ocibox: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        # One line like every other error, not click's usage block.
        click.echo(f"ocibox: {e.format_message()}", err=True)
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            click.echo(f"  hint: see '{ctx.command_path} --help'", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Reader went away (e.g. `| head`): quiet exit, as coreutils do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"ocibox: {e.strerror or e}{where}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
