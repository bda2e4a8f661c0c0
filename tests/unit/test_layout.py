"""The layout keeps its promises: layers import one way, pods load no Raft, modules stay small.

The rules are DESIGN.md's "Layout" section as executable checks over the source tree
(imports read with `ast`, nothing imported), plus one real interpreter for the pod's
import graph.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("raftorch", "adapter", "persistence", "protocol")
PACKAGES = (*RUNTIME, "devtools")
MAX_MODULE_LINES = 500

# What each package (or layer of raftorch) must never import, and why.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "protocol": ("raftorch", "adapter", "persistence", "aiohttp", "pysyncobj", "asyncpg"),
    "persistence": ("raftorch", "adapter", "aiohttp", "pysyncobj"),
    "adapter": ("raftorch", "pysyncobj", "devtools"),
    "raftorch.core": ("raftorch.raft", "raftorch.leader", "raftorch.api", "raftorch.ops",
                      "pysyncobj", "aiohttp", "asyncpg"),
    "raftorch.raft": ("raftorch.leader", "raftorch.api", "raftorch.ops", "aiohttp"),
    "raftorch.leader": ("raftorch.api", "raftorch.ops", "aiohttp"),
    "raftorch.api": ("raftorch.ops",),
    "raftorch.config": ("raftorch.raft", "raftorch.leader", "raftorch.api", "raftorch.ops"),
}  # fmt: skip


def _modules() -> list[Path]:
    return sorted(p for package in RUNTIME for p in (ROOT / package).rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement of `path` names, outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports cost nothing at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_layers_import_one_way() -> None:
    broken = []
    for path in _modules():
        name = _dotted(path)
        for owner, forbidden in FORBIDDEN.items():
            if not _within(name, owner):
                continue
            for imported in _imports(path):
                if any(_within(imported, f) for f in forbidden):
                    broken.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not broken, "\n".join(broken)


def test_the_layers_exist_as_subpackages() -> None:
    for layer in ("config", "core", "raft", "leader", "api", "ops"):
        assert (ROOT / "raftorch" / layer / "__init__.py").is_file(), layer
    flat = [p.name for p in (ROOT / "raftorch").glob("*.py")]
    assert sorted(flat) == ["__init__.py", "__main__.py"], flat


def test_no_runtime_module_is_over_500_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, long


def test_no_runtime_module_uses_asyncio_wait_for() -> None:
    """Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives as the awaited
    thing completes: a pod's watchdog, cancelled at SIGTERM just as a renewal came, went
    on running, so the pod never drained (bug 10 in docs/reliability.md). The runtime
    uses `asyncio.timeout`, which does not."""
    users = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in _modules()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "wait_for"
        and ast.unparse(node.value) == "asyncio"
    ]  # fmt: skip
    assert not users, users


def test_every_module_says_what_it_owns() -> None:
    missing = [str(p.relative_to(ROOT)) for p in _modules() if not ast.get_docstring(
        ast.parse(p.read_text()))]  # fmt: skip
    assert not missing, missing


def test_an_adapter_pod_loads_no_raft_and_no_orchestrator() -> None:
    probe = (
        "import sys, adapter.cli; "
        "print('pysyncobj' in sys.modules, any(m.split('.')[0] == 'raftorch' for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out == ["False", "False"], out


@pytest.mark.parametrize("document", ["docs/architecture.md"])
def test_module_paths_in_the_architecture_walk_exist(document: str) -> None:
    text = (ROOT / document).read_text()
    named = set(
        re.findall(r"`((?:raftorch|adapter|persistence|protocol|devtools)/[\w/]+\.py)", text)
    )
    assert named, f"{document} names no module"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"{document} names modules that do not exist: {missing}"
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "raftorch").rglob("*.py")}
    unmentioned = sorted(m for m in modules - named if not m.endswith("__init__.py"))
    assert not unmentioned, f"{document} does not mention: {unmentioned}"
