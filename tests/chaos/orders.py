"""Stops the campaign itself ordered: sessions of an adapter the nemesis disabled.

Some faults switch an adapter on and off (`slow-start`, `slot-flood`). The nemesis
records `enable` {adapter} and `disable` {adapter} (the adapter's id) just *before* it
asks the API, so every stop the disable causes begins after its record. A
`session_stop` of one of that adapter's slots (slot ids are `<adapter id>/<index>`) whose
stop began after a `disable` and before the adapter's next `enable` is the user's order
carried out, not a drop. Any other stop of the same pod, or of that adapter while it
is enabled, is judged as usual.
"""

from __future__ import annotations

import math
from collections import defaultdict

from tests.chaos.history import Event, number, text

Windows = dict[str, list[tuple[float, float]]]
"""adapter id -> [disabled from, enabled again at) intervals."""


def disabled_windows(events: list[Event]) -> Windows:
    """When each adapter was disabled by the nemesis (events sorted by `t`)."""
    out: Windows = defaultdict(list)
    since: dict[str, float] = {}
    for ev in events:
        if ev["kind"] == "disable":
            since.setdefault(text(ev, "adapter"), number(ev, "t"))
        elif ev["kind"] == "enable":
            adapter = text(ev, "adapter")
            if adapter in since:
                out[adapter].append((since.pop(adapter), number(ev, "t")))
    for adapter, t in since.items():
        out[adapter].append((t, math.inf))
    return dict(out)


def ordered(windows: Windows, slot: str, began: float) -> bool:
    """Was stopping `slot` at `began` the carrying out of a disable?"""
    adapter = slot.rsplit("/", 1)[0]
    return any(a <= began < b for a, b in windows.get(adapter, ()))
