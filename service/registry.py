"""What is being served: one warmed ``ModelRuntime`` per model name, swapped atomically on reload.

Version policy: a model serves its pinned version (``ACTLAB_MODEL_VERSIONS``) or else its latest
*valid* version (a newer file that fails verification or loading is skipped with a logged reason
and the next older one is tried). On reload the new session is loaded and warmed before it
replaces the old one in a single assignment; a failed load keeps the old version serving, so no
request fails during a reload. A request may ask for another available version: it is loaded on
demand and kept, least recently used out, while the files of such versions add up to at most
``ACTLAB_VERSION_CACHE_BYTES`` (the latest one always stays). A version is loaded once however
many requests ask for it at the same time, and never while holding the cache's lock: requests
for cached versions are not held up by a load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import NotFound, Unavailable, quoted
from service.load_once_cache import LoadOnceCache
from service.repository import ModelFile, VerificationError, scan_repository, verify_model_file
from service.runtime import ModelLoadError, ModelRuntime, parallel_runs_for
from service.settings import Settings

log = logging.getLogger("actlab.registry")


@dataclass(frozen=True)
class SkippedModel:
    name: str
    version: int
    reason: str


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[SkippedModel] = field(default_factory=list)


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._serving: Mapping[str, ModelRuntime] = {}  # replaced whole, never mutated
        self._versions: Mapping[str, tuple[int, ...]] = {}
        # other versions, loaded on demand: (name, version) → runtime, by model-file bytes
        self._extra: LoadOnceCache[tuple[str, int], ModelRuntime] = LoadOnceCache(
            settings.version_cache_bytes, lambda runtime: _file_size(runtime.path)
        )
        self._reload_lock = threading.Lock()
        self._versions_lock = threading.Lock()
        self.startup_done = threading.Event()
        self.skipped: list[SkippedModel] = []
        self.last_reload_at: float | None = None

    # -- state -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.startup_done.is_set() and bool(self._serving)

    def names(self) -> list[str]:
        return sorted(self._serving)

    def serving(self) -> Mapping[str, ModelRuntime]:
        return self._serving

    def live_runtimes(self) -> list[ModelRuntime]:
        """Every runtime a request can reach now: the serving ones and the other versions
        cached on demand."""
        return [*self._serving.values(), *self._extra.values()]

    def live_keys(self) -> set[tuple[str, int, str]]:
        """(name, version, digest) of every runtime in ``live_runtimes``."""
        return {(r.name, r.version, r.digest) for r in self.live_runtimes()}

    def available_versions(self, name: str) -> tuple[int, ...]:
        return self._versions.get(name, ())

    def default_name(self) -> str:
        """ACTLAB_DEFAULT_MODEL if set, else the alphabetically first served model."""
        self._require_ready()
        configured = self.settings.default_model
        if configured is not None:
            if configured not in self._serving:
                raise NotFound(
                    f"the default model {configured!r} is not loaded; "
                    f"loaded models: {', '.join(self.names())}",
                    code="model_not_found",
                )
            return configured
        return self.names()[0]

    def get(self, name: str, version: int | None = None) -> ModelRuntime:
        """The serving runtime of ``name``, or the requested version (loaded on demand)."""
        serving = self._serving.get(name)
        if serving is None:
            if not self.startup_done.is_set():
                self._require_ready()
            raise NotFound(
                f"no model named {quoted(name)}; loaded models: "
                f"{', '.join(self.names()) or 'none'}",
                code="model_not_found",
            )
        if version is None or version == serving.version:
            return serving
        return self._get_extra_version(name, version)

    def _require_ready(self) -> None:
        if not self.startup_done.is_set():
            raise Unavailable("models are still loading; retry shortly", code="not_ready")
        if not self._serving:
            raise Unavailable("no valid model is loaded", code="not_ready", retry_after=30)

    def _get_extra_version(self, name: str, version: int) -> ModelRuntime:
        return self._extra.get_or_build((name, version), lambda: self._load_version(name, version))

    def _load_version(self, name: str, version: int) -> ModelRuntime:
        """Find, verify, load and warm one available version (no lock held)."""
        files = {f.version: f for f in scan_repository(self.settings.models_dir).get(name, [])}
        model_file = files.get(version) if version in self.available_versions(name) else None
        if model_file is None:
            raise NotFound(
                f"version {version} of model {name!r} is not available; available versions: "
                f"{', '.join(str(v) for v in self.available_versions(name))}",
                code="version_not_found",
            )
        try:
            return self._load(model_file)
        except (VerificationError, ModelLoadError) as exc:
            log.warning("version %s of %s cannot be served: %s", version, name, exc)
            self._forget_version(name, version)
            raise NotFound(
                f"version {version} of model {name!r} is in the repository but cannot be "
                f"served ({exc}); available versions: "
                f"{', '.join(str(v) for v in self.available_versions(name))}",
                code="version_not_found",
            ) from exc

    def _forget_version(self, name: str, version: int) -> None:
        """Stop listing a version that failed to load (until a reload finds it again)."""
        with self._versions_lock:
            versions = dict(self._versions)
            versions[name] = tuple(v for v in versions.get(name, ()) if v != version)
            self._versions = versions

    # -- loading ---------------------------------------------------------------------------
    def _load(self, model_file: ModelFile) -> ModelRuntime:
        digest = verify_model_file(model_file)
        runtime = ModelRuntime.load(
            model_file.path,
            name=model_file.name,
            version=model_file.version,
            digest=digest,
            intra_op_threads=self.settings.intra_op_threads,
            inter_op_threads=self.settings.inter_op_threads,
        )
        runtime.warm_up(self.settings.warmup_runs)
        runtime.enable_batching(
            self.settings.batch_max_size,
            self.settings.batch_max_wait_ms / 1e3,
            parallel_runs_for(self.settings.intra_op_threads),
        )
        return runtime

    def load_startup_models(self) -> ReloadReport:
        """Load and warm every model (one at a time), then mark startup done."""
        try:
            return self.reload()
        finally:
            self.startup_done.set()

    def reload(self) -> ReloadReport:
        """Scan, load+warm what changed, swap atomically; failures keep what is serving."""
        with self._reload_lock:
            report = ReloadReport()
            found = scan_repository(self.settings.models_dir)
            current = self._serving
            serving: dict[str, ModelRuntime] = {}
            for name, files in found.items():
                runtime = self._choose(name, files, current.get(name), report)
                if runtime is not None:
                    serving[name] = runtime
            for name, old in current.items():
                if name not in found:
                    report.removed.append(name)
                    log.info("model %s is gone from the repository; unloaded", name)
                elif name not in serving:
                    serving[name] = old  # nothing valid on disk any more: keep serving the old one
            unservable = {(s.name, s.version) for s in report.skipped}
            with self._versions_lock:
                self._versions = {
                    name: tuple(f.version for f in files if (name, f.version) not in unservable)
                    for name, files in found.items()
                }
            self._serving = serving
            self._extra.invalidate(keep=lambda key: False)  # a load running now is not kept
            self.skipped = report.skipped
            self.last_reload_at = time.time()
            return report

    def _choose(
        self, name: str, files: list[ModelFile], old: ModelRuntime | None, report: ReloadReport
    ) -> ModelRuntime | None:
        pin = self.settings.model_versions.get(name)
        candidates = [f for f in files if f.version == pin] if pin else list(reversed(files))
        if pin and not candidates:
            reason = f"pinned version {pin} is not in the repository"
            report.skipped.append(SkippedModel(name, pin, reason))
            log.error("model %s skipped: %s", name, reason)
        for model_file in candidates:
            if old is not None and old.version == model_file.version:
                try:
                    if verify_model_file(model_file) == old.digest:
                        report.unchanged.append(name)
                        return old
                except VerificationError:
                    pass  # fall through to a full load that reports the reason
            try:
                runtime = self._load(model_file)
            except (VerificationError, ModelLoadError) as exc:
                report.skipped.append(SkippedModel(name, model_file.version, str(exc)))
                log.error("model %s version %s skipped: %s", name, model_file.version, exc)
                continue
            report.loaded.append(f"{name}/{model_file.version}")
            log.info("model %s version %s loaded and warm", name, model_file.version)
            return runtime
        if old is not None:
            log.warning("model %s: no newer valid version; keeping version %s", name, old.version)
        return old


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # removed since it was loaded: count it as nothing
        return 0
