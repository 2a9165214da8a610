"""The v2 routes' own per-app state, created on first use (the app factory knows nothing of it)."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request

from service.v2.statistics import InferenceStatistics

_CREATE = threading.Lock()


def get_statistics(request: Request) -> InferenceStatistics:
    state = request.app.state
    statistics = getattr(state, "v2_statistics", None)
    if statistics is None:
        with _CREATE:
            statistics = getattr(state, "v2_statistics", None)
            if statistics is None:
                statistics = state.v2_statistics = InferenceStatistics()
    return statistics


StatisticsDep = Annotated[InferenceStatistics, Depends(get_statistics)]
