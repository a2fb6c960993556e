"""ocibox.registry: a registry server for the OCI Distribution Specification v1.1.

    from ocibox.registry import RegistryConfig, make_app, serve, collect_garbage

``make_app`` builds the aiohttp application (for embedding and tests),
``serve`` runs it until interrupted, ``collect_garbage`` is the mark and
sweep that ``ocibox registry gc`` runs. Storage sits behind
``ocibox.registry.storage.StorageDriver``; the filesystem driver is the default.
"""

from .config import RegistryConfig, load_config

__all__ = ["RegistryConfig", "collect_garbage", "load_config", "make_app", "serve"]


def __getattr__(name: str):
    # aiohttp is imported only by what serves HTTP, not by ``registry gc`` or config loading.
    if name == "make_app":
        from .app import make_app

        return make_app
    if name == "serve":
        from .server import serve

        return serve
    if name == "collect_garbage":
        from .gc import collect_garbage

        return collect_garbage
    raise AttributeError(name)
