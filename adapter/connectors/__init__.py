"""Built-in connectors, and the config checking and retry backoff they share.

The connectors themselves live in their own modules (`pg_queue`, `tcp_client`) and
are found through the ``raftorch.connectors`` entry points, never imported from here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError

log = logging.getLogger(__name__)

_MISSING = object()


class ConfigReader:
    """Reads one connector configuration, key by key, and rejects anything off.

    Every error is a `ConfigError` whose one-line message names the connector type
    and the key. Call `finish()` after the last key: keys nobody read are errors too,
    so a typo never silently falls back to a default.
    """

    def __init__(self, connector: str, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"{connector} config must be a mapping, got {type(config).__name__}")
        self._connector = connector
        self._config = config
        self._read: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._connector} config: {key} {problem}")

    def _get(self, key: str, default: object) -> object:
        self._read.add(key)
        value = self._config.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return value

    def text(self, key: str, *, max_length: int = 255) -> str:
        """A required, non-empty string."""
        value = self._get(key, _MISSING)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if len(value) > max_length:
            raise self.error(key, f"must be at most {max_length} characters")
        return value

    def integer(self, key: str, *, low: int, high: int, default: object = _MISSING) -> int:
        """An integer in [low, high]; booleans and numeric strings are refused."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def seconds(self, key: str, *, default: object = _MISSING) -> float:
        """A finite duration in seconds, strictly positive."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise self.error(key, f"must be a positive number of seconds, got {value}")
        return float(value)

    def finish(self) -> None:
        """Raise on the first key (in sorted order) that no reader asked for."""
        unknown = sorted(str(k) for k in self._config if k not in self._read)
        if unknown:
            raise self.error(unknown[0], "is not a known key")


class Backoff:
    """Exponential retry delays with jitter: initial, doubling, capped; `reset()` after success.

    The jitter (each delay drawn from [delay/2, delay]) keeps the sessions of a pod
    from hammering a recovering dependency in lock step.
    """

    def __init__(self, initial_seconds: float, max_seconds: float) -> None:
        if not 0 < initial_seconds <= max_seconds:
            raise ValueError(f"need 0 < initial ({initial_seconds}) <= max ({max_seconds})")
        self._initial = initial_seconds
        self._max = max_seconds
        self._next = initial_seconds
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._next
        self._next = min(self._next * 2, self._max)
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._next = self._initial
        self.failures = 0


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended.

    Unlike ``task.cancel(); await task`` under ``suppress(CancelledError)``, a
    cancellation of the caller itself (the runtime bounds `stop()`) still propagates.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("task ended with an error task=%s", task.get_name(), exc_info=task.exception())
