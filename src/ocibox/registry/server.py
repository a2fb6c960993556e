"""Run the registry: listen, log each request, collect garbage on a schedule."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger

from ..errors import UsageError
from .app import METRICS, STORE, make_app
from .config import RegistryConfig
from .gc import collect_garbage
from .metrics import Metrics, endpoint_of

ACCESS_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
log = logging.getLogger("ocibox.registry")


def _access_logger(target: str) -> logging.Logger | None:
    if not target:
        return None
    logger = logging.getLogger("ocibox.registry.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _observer_class(metrics: Metrics, logger: logging.Logger | None) -> type[AbstractAccessLogger]:
    """aiohttp calls its access logger once a response is complete: count it there."""

    class Observer(AbstractAccessLogger):
        def __init__(self, log_to: logging.Logger, log_format: str) -> None:
            super().__init__(log_to, log_format)
            self._access = AccessLogger(logger, log_format) if logger is not None else None

        def log(self, request, response, time: float) -> None:
            received = getattr(request.content, "total_bytes", 0)
            metrics.observe(endpoint_of(request.path), request.method, response.status, time,
                            received, response.body_length)
            if self._access is not None:
                self._access.log(request, response, time)

    return Observer


def _tls(config: RegistryConfig):
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise UsageError("TLS needs both tls_cert and tls_key")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot load TLS certificate {config.tls_cert} / key {config.tls_key}: {e}") from None
    return context


async def _gc_loop(app: web.Application, config: RegistryConfig) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(config.gc_interval)
        try:
            report = await loop.run_in_executor(
                None, lambda: collect_garbage(app[STORE].driver, grace=config.gc_grace,
                                              upload_ttl=config.upload_ttl))
            log.info("gc: removed %d blobs (%d bytes), %d uploads", len(report.blobs_removed),
                     report.bytes_freed, report.uploads_removed)
        except Exception:  # a failed round must not stop the server
            log.exception("gc failed")


async def start(config: RegistryConfig, app: web.Application | None = None) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner and the bound port."""
    app = app or make_app(config)
    if config.gc_interval > 0:
        app.cleanup_ctx.append(lambda app: _gc_task(app, config))
    logger = _access_logger(config.access_log)
    observer = _observer_class(app[METRICS], logger)
    runner = web.AppRunner(app, access_log=logger or log, access_log_class=observer,
                           access_log_format=ACCESS_FORMAT)
    await runner.setup()
    host, port = config.host_port()
    site = web.TCPSite(runner, host, port, ssl_context=_tls(config))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    return runner, bound


async def _gc_task(app: web.Application, config: RegistryConfig):
    task = asyncio.create_task(_gc_loop(app, config))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _serve(config: RegistryConfig, ready=None) -> None:
    runner, port = await start(config)
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: RegistryConfig, ready=None) -> None:
    """Serve until SIGINT or SIGTERM; ``ready(port)`` is called once listening."""
    asyncio.run(_serve(config, ready))
