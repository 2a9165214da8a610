"""Reloading the model repository: on SIGHUP and, optionally, by polling — never on the event loop.

``Reloader`` runs ``ModelRegistry.reload`` on one background thread; reload requests that arrive
while a reload runs coalesce into one more pass. The registry swaps each new session in only
after it is loaded and warm, so requests keep being served throughout. After every pass the
``after_reload`` callbacks run (the inspection cache drops sessions of models no longer served),
then the freed memory is returned to the system (``service.memory``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from service.memory import release_free_memory
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.repository import repository_fingerprint
from service.settings import Settings

log = logging.getLogger("actlab.reload")


def install_sighup(loop: asyncio.AbstractEventLoop, reloader: Reloader) -> bool:
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.request_reload)
    except (NotImplementedError, RuntimeError, ValueError):
        log.info("SIGHUP reload unavailable here (not the main thread); polling still works")
        return False
    return True


async def poll_repository(reloader: Reloader, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    seen = await loop.run_in_executor(None, repository_fingerprint, settings.models_dir)
    while True:
        await asyncio.sleep(settings.reload_poll_s)
        now = await loop.run_in_executor(None, repository_fingerprint, settings.models_dir)
        if now != seen:
            seen = now
            reloader.request_reload()


class Reloader:
    """Runs reloads on one background thread; requests arriving during a reload coalesce."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._pending = False
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.after_reload: list[Callable[[], None]] = []

    def startup(self) -> None:
        try:
            report = self.registry.load_startup_models()
            self.metrics.reloads.labels("startup").inc()
            log.info(
                "startup: serving %s; skipped %d",
                ", ".join(report.loaded) or "nothing",
                len(report.skipped),
            )
        except Exception:
            log.exception("startup model loading failed")
        finally:
            self.metrics.models_loaded.set(len(self.registry.names()))

    def request_reload(self) -> None:
        with self._lock:
            self._pending = True
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="reload", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        self.registry.startup_done.wait()
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    return
                self._pending = False
            try:
                report = self.registry.reload()
                outcome = "failed" if report.skipped and not report.loaded else "ok"
                self.metrics.reloads.labels(outcome).inc()
                log.info(
                    "reload: loaded %s, unchanged %d, removed %s, skipped %d",
                    ", ".join(report.loaded) or "nothing",
                    len(report.unchanged),
                    ", ".join(report.removed) or "nothing",
                    len(report.skipped),
                )
            except Exception:
                self.metrics.reloads.labels("error").inc()
                log.exception("reload failed; the previous models keep serving")
            self.metrics.models_loaded.set(len(self.registry.names()))
            for callback in self.after_reload:
                try:
                    callback()
                except Exception:
                    log.exception("a post-reload step failed; serving continues")
            release_free_memory()  # the replaced sessions' pages go back to the system
