"""docs/security.md states the limits the code enforces, and README.md links it."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.admin import MAX_CONFIG_BYTES
from protocol.pod import MAX_CAPACITY, MAX_CONNECTORS, MAX_LABELS, REPORT_SLACK
from raftorch.api.admin import CURSOR_CHARS, DEFAULT_PAGE, MAX_PAGE
from raftorch.api.edge import MAX_TOKEN_CHARS, TOKEN_CACHE_SECONDS
from raftorch.api.pods import BODY_BASE_BYTES, REGISTER_BODY_BYTES, REPORT_BYTES
from raftorch.config import Config
from raftorch.config.validation import MIN_SECRET_CHARS
from raftorch.core.model import MAX_EPOCH
from raftorch.leader.loop import EPOCH_HEADROOM_WARNING

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")


def _said(text: str) -> None:
    assert text in DOC, f"docs/security.md does not say {text!r}"


def test_the_limits_in_the_document_are_the_codes() -> None:
    _said(f"{Config().api.max_body_bytes:,} bytes")
    _said(f"{MAX_CONFIG_BYTES // 1024} KiB of JSON")
    _said(f"`limit` 1\u2013{MAX_PAGE} (default {DEFAULT_PAGE}), `cursor` at most {CURSOR_CHARS}")
    _said(f"| labels | {MAX_LABELS};")
    _said(f"| connector offers | {MAX_CONNECTORS};")
    _said(f"0\u2013{MAX_CAPACITY:,} sessions")
    _said(f"2 \u00d7 capacity + {REPORT_SLACK}")
    _said(f"{BODY_BASE_BYTES // 1024} KiB + {REPORT_BYTES:,} bytes per session")
    _said(f"| registration body | {REGISTER_BODY_BYTES // 1024} KiB |")
    _said(f"longer than\n  {MAX_TOKEN_CHARS} characters")
    _said(f"verified token for {TOKEN_CACHE_SECONDS:g} seconds")
    _said(f"shorter than {MIN_SECRET_CHARS}")
    assert MAX_EPOCH == 2**62 and EPOCH_HEADROOM_WARNING == 2**40
    _said("The largest epoch is 2^62")
    _said("within\n  2^40 of the largest epoch")


def test_the_document_names_real_metrics_and_alerts_and_is_linked() -> None:
    rules = (ROOT / "helm" / "raftorch" / "files" / "prometheus-rules.yaml").read_text()
    alerts = re.findall(r"`(Raftorch[A-Za-z]+)`", DOC)
    assert alerts
    for alert in alerts:
        assert f"alert: {alert}\n" in rules, alert
    code = "\n".join(p.read_text() for p in (ROOT / "raftorch").rglob("*.py"))
    metrics = set(re.findall(r"`(raftorch_[a-z_]+?)(?:_total)?[`{]", DOC))
    assert len(metrics) >= 3, metrics
    for metric in metrics:
        assert f'"{metric}"' in code or f'"{metric}_total"' in code, metric
    assert "(docs/security.md)" in (ROOT / "README.md").read_text()
