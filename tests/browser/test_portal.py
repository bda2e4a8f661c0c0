"""The Portal in a real browser against a real cluster: the seed's maintenance procedure,
failover seen live, a viewer who can change nothing, refused edits, hostile strings.

Every test signs in on a follower's Portal (live updates must not need the leader).
Elements are found by role and accessible name, as a screen reader would find them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.harness import BASELINE, System
from tests.browser.portalpage import PortalPage
from tests.integration.processes import ADMIN_TOKEN, POLL_SECONDS, call

BASELINE_NAMES = {b["name"] for b in BASELINE}
HOSTILE = "<script>alert(1)</script>"
HOSTILE_CONFIG = "<img src=x onerror=alert(2)>"


def wait_for_page_and_api(
    portal: PortalPage, system: System, goal: str, timeout: float
) -> tuple[float, float]:
    """Seconds until the API, and until the page, show every baseline adapter at `goal`.

    Both are sampled in one loop, so the difference is how far the page lags the cluster.
    """
    started = time.monotonic()
    api_at: float | None = None
    page_at: float | None = None
    while api_at is None or page_at is None:
        now = time.monotonic() - started
        if api_at is None and all(a["status"] == goal for a in system.adapters_by_name().values()):
            api_at = now
        shown = portal.statuses()
        if page_at is None and set(shown) == BASELINE_NAMES and set(shown.values()) == {goal}:
            page_at = now
        assert now < timeout, f"not all {goal} after {timeout}s: page {shown}, api at {api_at}"
        time.sleep(POLL_SECONDS)
    return api_at, page_at


def test_maintenance_procedure_select_all_disable_then_enable(
    portal: PortalPage, system: System
) -> None:
    portal.sign_in(ADMIN_TOKEN)
    page = portal.page
    table = portal.table("Adapters")
    expect(table.locator("tbody").get_by_role("row")).to_have_count(len(BASELINE))
    assert set(portal.statuses().values()) == {"ACTIVE"}
    portal.shoot("adapters")
    portal.mark_document()

    page.get_by_role("checkbox", name="Select all").check()
    for name in BASELINE_NAMES:
        expect(page.get_by_role("checkbox", name=f"Select {name}")).to_be_checked()
    page.get_by_role("button", name="Disable").click()
    api_at, page_at = wait_for_page_and_api(portal, system, "INACTIVE", 30.0)
    print(f"disable: API all INACTIVE after {api_at:.2f}s, page after {page_at:.2f}s")
    assert page_at - api_at < 2.0, "the page lagged the cluster (live updates broken?)"
    assert {a["admin_state"] for a in system.adapters_by_name().values()} == {"DISABLED"}

    page.get_by_role("checkbox", name="Select all").check()
    page.get_by_role("button", name="Enable").click()
    api_at, page_at = wait_for_page_and_api(portal, system, "ACTIVE", 60.0)
    print(f"enable: API all ACTIVE after {api_at:.2f}s, page after {page_at:.2f}s")
    assert page_at - api_at < 2.0, "the page lagged the cluster (live updates broken?)"
    portal.assert_not_reloaded()


def test_filters_narrow_the_table_and_select_all_takes_only_what_is_shown(
    portal: PortalPage, system: System
) -> None:
    portal.sign_in(ADMIN_TOKEN)
    page = portal.page
    expect(portal.table("Adapters").locator("tbody").get_by_role("row")).to_have_count(3)
    page.get_by_label("Name").fill("feed")
    assert set(portal.statuses()) >= {"prices-feed"}
    expect(portal.table("Adapters").locator("tbody tr:visible")).to_have_count(1)
    page.get_by_role("checkbox", name="Select all").check()
    expect(page.get_by_text("1 of 3 adapters shown, 1 selected")).to_be_visible()
    page.get_by_label("Name").fill("")
    page.get_by_label("Status").select_option("INACTIVE")
    expect(page.get_by_text("No adapters match.")).to_be_visible()
    assert {a["admin_state"] for a in system.adapters_by_name().values()} == {"ENABLED"}


@pytest.fixture
def hostile_adapter(system: System) -> Iterator[dict[str, object]]:
    """An adapter whose connector and config are markup; DISABLED, removed after."""
    created = system.api("POST", "/api/v1/adapters", {
        "name": "hostile-strings", "connector": HOSTILE, "mode": "single",
        "config": {"note": HOSTILE_CONFIG},
    })  # fmt: skip
    yield created
    system.remove_adapter(str(created["id"]))


def test_hostile_strings_render_as_text_and_no_dialog_opens(
    portal: PortalPage, system: System, hostile_adapter: dict[str, object]
) -> None:
    portal.sign_in(ADMIN_TOKEN)
    page = portal.page
    # An adapter name is restricted to letters, digits, '.', '_' and '-' (the public
    # contract); the cluster refuses this one and the Portal shows its answer as text.
    portal.go("adapters/new")
    page.get_by_role("combobox", name="Connector").select_option("tcp-client")
    page.get_by_role("textbox", name="Name").fill(HOSTILE)
    page.get_by_role("button", name="Create adapter").click()
    expect(page.get_by_role("textbox", name="Name")).to_have_accessible_description(
        re.compile(re.escape("at `$.name`"))
    )
    expect(page.get_by_role("alert")).to_have_text(
        f"Adapter “{HOSTILE}” not created: the cluster refused the field marked above."
    )
    assert HOSTILE not in system.adapters_by_name()

    # Enabled, it cannot run (no pod offers that connector): the status detail quotes it.
    system.api("POST", f"/api/v1/adapters/{hostile_adapter['id']}/enable")
    portal.go("adapters")
    row = portal.table("Adapters").get_by_role("row").filter(has_text="hostile-strings")
    expect(row.get_by_role("cell").nth(2)).to_have_text(HOSTILE)
    expect(row).to_contain_text(f"no live pod offers connector {HOSTILE}")
    portal.go(f"adapters/{hostile_adapter['id']}")
    expect(page.get_by_role("textbox", name="Configuration (JSON)")).to_have_value(
        re.compile(re.escape(HOSTILE_CONFIG))
    )
    expect(portal.definition("Connector")).to_have_text(HOSTILE)
    markup = page.evaluate(
        "() => ({scripts: document.scripts.length, images: document.images.length})"
    )
    assert markup == {"scripts": 1, "images": 0}, markup
    assert not portal.dialogs


def test_wrong_token_at_sign_in_says_so(portal: PortalPage) -> None:
    portal.open()
    page = portal.page
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    portal.shoot("sign-in")
    page.get_by_label("Token").fill("rt_this-token-was-never-issued")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    expect(page.get_by_label("Token")).to_have_accessible_description(
        re.compile("not accepted: unknown or revoked token")
    )
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_count(0)


def test_bad_configuration_edit_is_shown_inline_and_changes_nothing(
    portal: PortalPage, system: System
) -> None:
    adapter_id = system.adapters["orders-fix"]
    before = system.api("GET", f"/api/v1/adapters/{adapter_id}")
    portal.sign_in(ADMIN_TOKEN)
    portal.go(f"adapters/{adapter_id}")
    page = portal.page
    config = page.get_by_role("textbox", name="Configuration (JSON)")
    expect(config).to_have_value(re.compile('"host"'))
    save = page.get_by_role("button", name="Save configuration")

    config.fill('{"host": "127.0.0.1", "port": ')
    save.click()
    expect(config).to_have_attribute("aria-invalid", "true")
    expect(config).to_have_accessible_description(re.compile("Not valid JSON"))

    page.get_by_role("button", name="Discard changes").click()
    expect(config).not_to_have_attribute("aria-invalid", "true")
    instances = page.get_by_role("spinbutton", name="Instances")
    instances.fill("2")  # mode single takes one instance: the cluster refuses it
    save.click()
    expect(instances).to_have_attribute("aria-invalid", "true")
    expect(instances).to_have_accessible_description(
        re.compile("instances must be 1 for mode single, got 2")
    )
    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")

    after = system.api("GET", f"/api/v1/adapters/{adapter_id}")
    assert (after["revision"], after["instances"], after["config"]) == (
        before["revision"], before["instances"], before["config"],
    )  # fmt: skip
    assert after["status"] == "ACTIVE"


def test_viewer_reads_every_page_and_can_change_nothing(portal: PortalPage, system: System) -> None:
    viewer = system.token("viewer")
    portal.sign_in(viewer["token"])
    page = portal.page
    adapter_id = system.adapters["orders-fix"]
    expect(page.get_by_text("(viewer)")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Adapters", "Pods", "Cluster", "Artifacts"])

    expect(portal.table("Adapters").locator("tbody").get_by_role("row")).to_have_count(3)
    assert set(portal.statuses()) == BASELINE_NAMES
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("link", name="New adapter")).to_have_count(0)
    assert portal.usable_buttons() == []

    portal.go(f"adapters/{adapter_id}")
    expect(portal.definition("Status")).to_contain_text("ACTIVE")
    expect(portal.table("Event log").locator("tbody").get_by_role("row").first).to_be_visible()
    expect(page.get_by_text('"host": "127.0.0.1"')).to_be_visible()
    expect(page.get_by_role("textbox")).to_have_count(0)
    assert portal.usable_buttons() == []

    checks = {
        "pods": lambda: expect(
            portal.table("Pods").locator("tbody").get_by_role("row")
        ).to_have_count(3),
        "cluster": lambda: expect(
            portal.table("Replicas").locator("tbody").get_by_role("row")
        ).to_have_count(3),
        "artifacts": lambda: expect(portal.table("Artifacts")).to_contain_text("FIX44"),
        "adapters/new": lambda: expect(page.get_by_text("needs the admin role")).to_be_visible(),
        "tokens": lambda: expect(page.get_by_text("needs the admin role")).to_be_visible(),
    }
    for route, check in checks.items():
        portal.go(route)
        check()
        assert portal.usable_buttons() == [], route
        expect(page.get_by_role("textbox")).to_have_count(0)

    # Revoked while signed in: the revocation is a change, the page re-reads, is refused
    # and signs out, without anyone touching it.
    portal.go("adapters")
    expect(portal.table("Adapters")).to_be_visible()
    system.api("DELETE", f"/api/v1/tokens/{viewer['id']}")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=5_000)
    expect(page.get_by_text("no longer accepted")).to_be_visible()
    assert call("GET", portal.base_url + "/api/v1/adapters", token=viewer["token"]).status == 401


def test_every_page_for_an_admin_with_screenshots(portal: PortalPage, system: System) -> None:
    """Each page shows its data; the screenshots are the ones docs/portal.md uses."""
    for replica in system.live_replicas():  # leader and followers alike serve the Portal
        served = call("GET", replica.api_url + "/", token=None)
        assert served.status == 200 and b"raftorch Portal" in served.body, replica.node_id
        assert "script-src 'self'" in served.headers["Content-Security-Policy"]
    portal.sign_in(ADMIN_TOKEN)
    page = portal.page
    portal.go("adapters/new")
    expect(page.get_by_role("combobox", name="Connector")).to_contain_text("tcp-client")
    page.get_by_role("textbox", name="Name").fill("orders-lse")
    page.get_by_role("combobox", name="Connector").select_option("tcp-client")
    page.get_by_role("textbox", name="Configuration (JSON)").fill(
        '{\n  "host": "lse-gateway.example",\n  "port": 9120\n}'
    )
    portal.shoot("new-adapter")

    portal.go("pods")
    expect(portal.table("Pods").locator("tbody").get_by_role("row")).to_have_count(3)
    expect(portal.table("Pods")).to_contain_text("orders-fix")
    portal.shoot("pods")

    portal.go("cluster")
    replicas = portal.table("Replicas")
    expect(replicas.locator("tbody").get_by_role("row")).to_have_count(3)
    expect(replicas).to_contain_text("leader")
    expect(portal.definition("Health of this replica")).to_have_text("ready")
    expect(portal.definition("Quorum")).to_have_text("yes")
    here = portal.definition("This replica").inner_text()
    peers = replicas.get_by_role("row").filter(has_text=f"Raft link from {here} up")
    expect(peers).to_have_count(2)
    portal.shoot("cluster")

    portal.go("artifacts")
    artifacts = portal.table("Artifacts")
    used = artifacts.get_by_role("row").filter(has_text="FIX44")
    expect(used).to_contain_text("orders-fix")
    expect(page.get_by_role("button", name="Delete FIX44")).to_be_disabled()
    expect(page.get_by_role("button", name="Delete venue-map")).to_be_enabled()
    portal.shoot("artifacts")

    portal.go("tokens")
    page.get_by_role("textbox", name="Name").fill("ops-dashboard")
    page.get_by_role("combobox", name="Role").select_option("viewer")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_role("textbox", name="Token for ops-dashboard").input_value()
    assert secret.startswith("rt_")
    row = portal.table("Tokens").get_by_role("row").filter(has_text="ops-dashboard")
    expect(row).to_contain_text("viewer")
    assert secret not in portal.table("Tokens").inner_text()
    portal.shoot("tokens")
    page.get_by_role("button", name="Revoke ops-dashboard").click()
    expect(row).to_contain_text("revoked")


def test_pod_kill_shows_new_owner_and_failover_events_without_reload(
    portal: PortalPage, system: System
) -> None:
    adapter_id = system.adapters["orders-fix"]
    portal.sign_in(ADMIN_TOKEN)
    portal.go(f"adapters/{adapter_id}")
    owner = portal.definition("Owner pod")
    expect(owner).to_have_text(re.compile(r"^pod-\d+$"))
    killed = owner.inner_text().strip()
    portal.mark_document()

    system.kill_pod(killed)
    expect(owner).not_to_have_text(killed, timeout=30_000)
    expect(owner).to_have_text(re.compile(r"^pod-\d+$"))
    new_owner = owner.inner_text().strip()
    events = portal.table("Event log")
    expect(events).to_contain_text(f"lease of pod {killed} expired")
    expect(events).to_contain_text(f"failover to pod {new_owner}")
    expect(portal.definition("Status")).to_contain_text("ACTIVE", timeout=30_000)
    expect(events).to_contain_text("failover completed in", timeout=15_000)
    first = events.locator("tbody").get_by_role("row").first.get_by_role("cell")
    expect(first.nth(3)).not_to_have_text(re.compile("created by"))  # newest first
    portal.assert_not_reloaded()
    portal.shoot("adapter")

    page = portal.page
    page.get_by_role("combobox", name="Category").select_option("action")
    rows = events.locator("tbody").get_by_role("row")
    expect(rows.last).to_contain_text("created by")  # the oldest event
    categories = [row.get_by_role("cell").nth(2).inner_text() for row in rows.all()]
    assert categories and set(categories) == {"action"}, categories
    page.get_by_role("combobox", name="Category").select_option("")
    page.get_by_role("combobox", name="Level").select_option("warning")
    expect(events).to_contain_text(f"lease of pod {killed} expired")
    expect(events).not_to_contain_text("failover to pod")
