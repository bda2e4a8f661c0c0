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
from tests.integration.processes import ADMIN_TOKEN, POLL_SECONDS

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
        if api_at is None and all(
            a["status"] == goal for a in system.adapters_by_name().values()
        ):
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
