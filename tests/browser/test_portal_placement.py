"""The Pods page in a real browser against a real cluster: an operator drains a pod (its
sessions move off by handoff while it keeps running), undrains it and rebalances sessions
back onto it; a viewer is offered none of that, and the API refuses it anyway.

Same cluster as tests/browser/test_portal.py (three replicas, three pods, the baseline
adapters, the demo's 3 s lease and the shipped placement settings), on a follower's Portal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, expect

from tests.browser.harness import BASELINE, System
from tests.browser.portalpage import PortalPage
from tests.integration.processes import ADMIN_TOKEN, call, wait_until

TTL = 3.0  # the demo's lease, which the browser cluster runs
BASELINE_NAMES = {b["name"] for b in BASELINE}
# Records every status badge the Pods table shows, so the test can report what it saw.
WATCH_BADGES = """() => {
  window.__badges = new Set();
  new MutationObserver(() => {
    for (const b of document.querySelectorAll("table .badge")) window.__badges.add(b.textContent);
  }).observe(document.querySelector("main"), { childList: true, subtree: true });
}"""


def pods(system: System) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in system.api("GET", "/api/v1/pods")["items"]}


def owned(pod: dict[str, Any]) -> dict[str, int]:
    """The slots `pod` owns (not those it stands by for), with their epochs."""
    return {s["slot"]: s["epoch"] for s in pod["sessions"] if s["role"] == "ACTIVE"}


def all_active(system: System) -> dict[str, dict[str, Any]] | None:
    found = system.adapters_by_name()
    ok = set(found) == BASELINE_NAMES and all(a["status"] == "ACTIVE" for a in found.values())
    return found if ok else None


def pod_row(portal: PortalPage, pod_id: str) -> Locator:
    first_cell = portal.page.get_by_role("cell", name=pod_id, exact=True)
    return portal.table("Pods").locator("tbody").get_by_role("row").filter(has=first_cell)


def cell(portal: PortalPage, row: Locator, column: str) -> Locator:
    headers = portal.table("Pods").get_by_role("columnheader").all_inner_texts()
    headers = [h.strip() for h in headers]
    return row.get_by_role("cell").nth(headers.index(column))


@pytest.fixture
def undrain_after(system: System) -> Iterator[list[str]]:
    """Pods the test drains; whatever happens, they take sessions again afterwards."""
    drained: list[str] = []
    yield drained
    for pod_id in drained:
        if pods(system).get(pod_id, {}).get("state") == "DRAINING":
            system.api("POST", f"/api/v1/pods/{pod_id}/undrain")


def test_operator_drains_a_pod_then_undrains_and_rebalances_it_from_the_pods_page(
    portal: PortalPage, system: System, undrain_after: list[str]
) -> None:
    operator = system.token("operator")
    portal.sign_in(operator["token"])
    page = portal.page
    portal.go("pods")
    expect(portal.table("Pods").locator("tbody").get_by_role("row")).to_have_count(3)
    before = pods(system)
    busiest = max(sorted(before), key=lambda p: len(owned(before[p])))
    moved = owned(before[busiest])
    assert moved, before
    row = pod_row(portal, busiest)
    expect(cell(portal, row, "State")).to_have_text("ACTIVE")
    for other in before:
        expect(page.get_by_role("button", name=f"Drain {other}", exact=True)).to_be_enabled()
    page.evaluate(WATCH_BADGES)
    portal.mark_document()

    undrain_after.append(busiest)
    started = time.monotonic()
    page.get_by_role("button", name=f"Drain {busiest}", exact=True).click()
    expect(page.get_by_text(f"Drain of {busiest} requested")).to_be_visible()
    expect(cell(portal, row, "State")).to_contain_text("DRAINING")
    # Keyboard users stay on the same pod: its button is now Undrain, and focused.
    expect(page.get_by_role("button", name=f"Undrain {busiest}", exact=True)).to_be_focused()
    expect(page.get_by_role("button", name=f"Drain {busiest}", exact=True)).to_have_count(0)
    expect(cell(portal, row, "State")).to_contain_text("runs no session: safe to stop",
                                                       timeout=30_000)  # fmt: skip
    shown_at = time.monotonic() - started
    badges = sorted(page.evaluate("() => [...window.__badges]"))
    print(f"\ndrain of {busiest} ({len(moved)} sessions): page showed it empty after "
          f"{shown_at:.2f}s; badges seen meanwhile: {badges}")  # fmt: skip

    # The cluster agrees: every session runs elsewhere with a higher epoch, by handoff.
    after = wait_until(lambda: all_active(system), 30.0, "every adapter ACTIVE after the drain")
    now = pods(system)
    assert now[busiest]["state"] == "DRAINING" and not owned(now[busiest])
    assert next(p for p in system.pods if p.pod_id == busiest).alive(), "a drain stops no pod"
    slots = {s["slot"]: s for a in after.values() for s in a["slots"]}
    for slot, epoch in moved.items():
        assert slots[slot]["owner_pod"] not in (None, busiest), slots[slot]
        assert slots[slot]["epoch"] > epoch, (slot, epoch, slots[slot])
    for adapter_id in {slot.split("/")[0] for slot in moved}:
        events = [e["description"] for e in
                  system.api("GET", f"/api/v1/adapters/{adapter_id}/events")["items"]]  # fmt: skip
        assert any(e.startswith(f"handing over from pod {busiest} to pod") and
                   e.endswith("(drain)") for e in events), events  # fmt: skip
        assert not [e for e in events if e.startswith(f"lease of pod {busiest} expired")]

    # Back into service: Undrain, then Rebalance brings sessions back onto it.
    page.get_by_role("button", name=f"Undrain {busiest}", exact=True).click()
    expect(page.get_by_text(f"Undrained {busiest}")).to_be_visible()
    expect(cell(portal, row, "State")).to_have_text("ACTIVE")
    assert pods(system)[busiest]["state"] == "ACTIVE"
    page.get_by_role("button", name="Rebalance", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Rebalance requested: sessions move by handoff"))
           ).to_be_visible()  # fmt: skip
    wait_until(lambda: owned(pods(system)[busiest]), 3 * TTL + 10.0,
               f"a session rebalanced back onto {busiest}")  # fmt: skip
    expect(cell(portal, row, "Sessions")).to_contain_text("ACTIVE", timeout=10_000)
    wait_until(lambda: all_active(system), 30.0, "every adapter ACTIVE after the rebalance")
    portal.assert_not_reloaded()


def test_the_pods_page_offers_a_viewer_no_placement_action_and_the_api_refuses_one(
    portal: PortalPage, system: System
) -> None:
    viewer = system.token("viewer")
    portal.sign_in(viewer["token"])
    page = portal.page
    portal.go("pods")
    rows = portal.table("Pods").locator("tbody").get_by_role("row")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("ACTIVE")
    actions = page.get_by_role("button", name=re.compile(r"^(Drain|Undrain|Rebalance)\b"))
    expect(actions).to_have_count(0)
    expect(portal.table("Pods").get_by_role("columnheader", name="Actions")).to_have_count(0)
    assert portal.usable_buttons() == []

    target = sorted(pods(system))[0]
    for path in (f"/api/v1/pods/{target}/drain", "/api/v1/cluster/rebalance"):
        refused = call("POST", portal.base_url + path, token=viewer["token"])
        assert refused.status == 403, (path, refused.status, refused.body)
    assert pods(system)[target]["state"] == "ACTIVE"


def test_a_session_handing_off_shows_a_badge_styled_as_on_the_move(portal: PortalPage) -> None:
    """HANDING_OFF (a slot status since placement) is rendered like the other transitions.

    A handoff of a tcp-client session lasts a few milliseconds, too short to catch on the
    page reliably, so the Portal's own badge function renders each status in the page.
    """
    portal.sign_in(ADMIN_TOKEN)
    styles = portal.page.evaluate("""async () => {
      const { statusBadge } = await import("/portal/dom.js");
      const style = (status) => {
        const badge = statusBadge(status);
        document.querySelector("main").append(badge);
        const found = [badge.textContent, getComputedStyle(badge).backgroundColor];
        badge.remove();
        return found;
      };
      return Object.fromEntries(["HANDING_OFF", "REVOKING", "CLAIMING", "UNASSIGNED"]
        .map((s) => [s, style(s)]));
    }""")
    assert styles["HANDING_OFF"][0] == "HANDING_OFF"
    assert styles["HANDING_OFF"][1] == styles["CLAIMING"][1] == styles["REVOKING"][1]
    assert styles["HANDING_OFF"][1] != styles["UNASSIGNED"][1], styles  # not the idle grey
