"""A recorded chaos-campaign history: its events and how they are read from disk.

Events come from the lease audit trails (JSON lines, see docs/reliability.md), the
campaign's own records, the producers' ids and the sink rows. `read_events` merges
the trail files; the field readers raise `HistoryError` on anything malformed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Event = dict[str, Any]
"""One recorded event as loaded from JSON: at least `t`, `wall`, `kind`, `source`."""


class HistoryError(ValueError):
    """The history is malformed; the message names the file and line, or the event."""


@dataclass
class History:
    """A recorded campaign: events (any order), lease TTL, recovery bound, queues.

    `produced` maps a queue to the message ids the producer confirmed; `deliveries`
    maps a queue to sink rows {seq, msg_id, slot, epoch, pod_id}.
    """

    events: list[Event]
    ttl: float
    recovery_bound: float
    produced: dict[str, list[int]] = field(default_factory=dict)
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read {"ttl", "recovery_bound", "produced", "deliveries", "events"} from a JSON file."""
        p = Path(path)
        try:
            raw = json.loads(p.read_bytes())
        except ValueError as e:
            raise HistoryError(f"{p}: not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise HistoryError(f"{p}: expected a JSON object, got {type(raw).__name__}")
        try:
            return cls(
                events=[dict(ev) for ev in raw["events"]],
                ttl=float(raw["ttl"]),
                recovery_bound=float(raw["recovery_bound"]),
                produced={str(q): [int(i) for i in ids] for q, ids in raw["produced"].items()},
                deliveries={
                    str(q): [dict(r) for r in rows] for q, rows in raw["deliveries"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HistoryError(f"{p}: not a history: {e!r}") from e


def read_events(paths: Iterable[str | Path]) -> list[Event]:
    """Merge JSON-lines event files into one list ordered by `t` (stable within a file).

    A process killed by SIGKILL can leave its last line cut short: the last
    non-blank line of a file is skipped if it does not parse. Any other bad line
    raises `HistoryError` naming the file and the line number.
    """
    events: list[Event] = []
    for path in paths:
        p = Path(path)
        lines = p.read_bytes().split(b"\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as e:  # JSONDecodeError or a cut multi-byte character
                if i == last:
                    break
                raise HistoryError(f"{p}:{i + 1}: not JSON: {e}") from e
            problem = event_problem(ev)
            if problem:
                raise HistoryError(f"{p}:{i + 1}: {problem}")
            events.append(ev)
    events.sort(key=lambda ev: float(ev["t"]))
    return events


def event_problem(ev: object) -> str | None:
    if not isinstance(ev, dict):
        return f"not an event object: {ev!r}"
    for key, types in (("t", (int, float)), ("kind", (str,)), ("source", (str,))):
        if not isinstance(ev.get(key), types) or isinstance(ev.get(key), bool):
            return f"event without a valid {key!r}: {ev!r}"
    return None


def field_of(obj: dict[str, Any], key: str, *types: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, types) or isinstance(value, bool):
        raise HistoryError(f"bad or missing {key!r} in {obj!r}")
    return value


def number(obj: dict[str, Any], key: str) -> float:
    return float(field_of(obj, key, int, float))


def integer(obj: dict[str, Any], key: str) -> int:
    return int(field_of(obj, key, int))


def text(obj: dict[str, Any], key: str) -> str:
    return str(field_of(obj, key, str))


def texts(obj: dict[str, Any], key: str) -> list[str]:
    return [str(x) for x in field_of(obj, key, list)]


def pids_of(obj: dict[str, Any]) -> dict[str, int]:
    """The optional `pids` {pod: pid} of a fault; {} when absent."""
    if obj.get("pids") is None:
        return {}
    return {str(pod): integer(obj["pids"], pod) for pod in field_of(obj, "pids", dict)}
