"""The models the views ask for: aliases followed by polling, preloads, over the model cache.

Requests ask for a name and a version or alias; aliases resolve through a map that a poller
refreshes every `alias_poll_interval_s`. A promoted version is loaded in the background and
only then swapped into the map, so requests never wait for it; requests already holding the
previous version finish on it. A version that fails to load leaves the alias pointing at the
version that was serving (`service.inference.cache` keeps the failure and backs off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service.config import InferenceSettings
from service.inference.cache import ModelCache
from service.inference.loaded import LoadedModel
from service.registry import Registry

log = logging.getLogger("scantune.inference.models")

STOP_WAIT_S = 10.0


class ModelManager:
    """Finds, loads and refreshes models for the views; knows nothing of HTTP."""

    def __init__(
        self,
        registry: Registry,
        settings: InferenceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.cache = ModelCache(registry, settings, clock=clock)
        self._aliases: dict[tuple[str, str], int] = {}
        self._stale_aliases: dict[tuple[str, str], str] = {}  # alias -> last reason logged
        self._lock = threading.Lock()
        self._pending_preloads = list(settings.preload_models)
        self._preload_errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # lifecycle
    def start(self) -> None:
        """Preload the configured models, then poll aliases, in background threads."""
        for target, name in ((self._preload_all, "preload"), (self._poll_loop, "alias-poller")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Join the background threads and the all-core session builds (at most
        `STOP_WAIT_S` in all), then close the models."""
        self._stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.cache.close(deadline)

    def check_ready(self) -> None:
        """Raise while configured preloads are not all loaded (readiness)."""
        if self._preload_errors:
            raise RuntimeError("; ".join(self._preload_errors.values()))
        if self._pending_preloads:
            raise RuntimeError(f"loading {', '.join(self._pending_preloads)}")

    # lookups
    def get(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> LoadedModel:
        """The loaded model a request means (loading it now if needed)."""
        if version is None:
            version = self.resolve_alias(name, alias or self.settings.default_alias)
        model = self.cache.cached(name, version)
        return model if model is not None else self.cache.load(name, version)

    def resolve_alias(self, name: str, alias: str) -> int:
        with self._lock:
            version = self._aliases.get((name, alias))
        if version is None:
            version = self.registry.get_alias(name, alias).version
            with self._lock:
                version = self._aliases.setdefault((name, alias), version)
        return version

    def aliases_of(self, name: str) -> dict[str, int]:
        """The aliases this process follows for `name` and the versions they serve."""
        with self._lock:
            return {a: v for (n, a), v in self._aliases.items() if n == name}

    def cached(self, name: str, version: int) -> LoadedModel | None:
        return self.cache.cached(name, version)

    def loaded(self) -> list[LoadedModel]:
        return self.cache.loaded()

    # background work
    def _preload_all(self) -> None:
        for entry in list(self._pending_preloads):
            if self._stop.is_set():
                return
            try:
                name, version, alias = parse_model_ref(entry, self.settings.default_alias)
                self.get(name, version=version, alias=alias)
                self._preload_errors.pop(entry, None)
            except Exception as exc:  # keep going; readiness reports it, the poller retries
                self._preload_errors[entry] = f"{entry}: {exc}"
                log.error("preload %s failed: %s", entry, exc)
            self._pending_preloads.remove(entry)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.settings.alias_poll_interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        """Re-read followed aliases; load new targets first, then swap; retry failed preloads."""
        with self._lock:
            followed = list(self._aliases.items())
        for (name, alias), current in followed:
            try:
                target = self.registry.get_alias(name, alias).version
                if target != current:
                    self.cache.load(name, target)
                    with self._lock:
                        self._aliases[(name, alias)] = target
                    log.info("alias %s@%s moved %s -> %s", name, alias, current, target)
                self._stale_aliases.pop((name, alias), None)
            except Exception as exc:  # keep serving `current`; the failure is logged and counted
                # once per reason: a refused version would otherwise warn every poll interval
                repeated = self._stale_aliases.get((name, alias)) == str(exc)
                self._stale_aliases[(name, alias)] = str(exc)
                log.log(
                    logging.DEBUG if repeated else logging.WARNING,
                    "alias %s@%s not refreshed, still serving %s: %s",
                    name, alias, current, exc,
                )  # fmt: skip
        if self._preload_errors and not self._pending_preloads:
            self._pending_preloads.extend(self._preload_errors)
            self._preload_all()


def parse_model_ref(entry: str, default_alias: str) -> tuple[str, int | None, str | None]:
    """'name', 'name@alias' or 'name:version' as (name, version, alias)."""
    if ":" in entry:
        name, _, number = entry.partition(":")
        return name, int(number), None
    name, _, alias = entry.partition("@")
    return name, None, alias or default_alias
