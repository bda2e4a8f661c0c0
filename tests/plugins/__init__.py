"""Connector plugins for tests, installed into a pod process through a real entry point.

`install(site)` writes a dist-info with an ``entry_points.txt`` into the folder `site`;
a pod started with `site` (and the repository) on PYTHONPATH finds the plugins exactly
as it finds any installed connector package.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = {"test-slow-start": "tests.plugins.slow_start:SlowStart"}


def install(site: Path) -> dict[str, str]:
    """The environment additions that make a pod process offer the test plugins."""
    info = site / "raftorch_test_plugins-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: raftorch-test-plugins\n"
                                   "Version: 0.0.0\n")  # fmt: skip
    lines = ["[raftorch.connectors]", *(f"{k} = {v}" for k, v in PLUGINS.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}
