"""The service's own log lines (``actlab.*``: startup, reloads, skipped models) on stderr.

uvicorn configures only its own loggers, so without a handler the ``actlab`` INFO lines (which
models a replica serves, what a SIGHUP reload loaded) were dropped and only warnings reached
``docker compose logs``. The level follows uvicorn's ``--log-level`` (INFO when uvicorn has not
set one). Nothing is added when the ``actlab`` logger or the root logger already has handlers:
a deployment's own logging configuration wins.
"""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s:     %(name)s: %(message)s"  # uvicorn's layout, plus the logger name


def enable_service_logs() -> None:
    service = logging.getLogger("actlab")
    if service.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    service.addHandler(handler)
    service.setLevel(logging.getLogger("uvicorn.error").level or logging.INFO)
