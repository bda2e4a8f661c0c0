"""Driving the Portal in Chromium by roles and accessible names, as a screen reader would."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Dialog, Locator, Page, expect

NAV_BUTTONS = {"Sign out"}  # buttons that change nothing in the cluster


@dataclass
class PortalPage:
    page: Page
    base_url: str
    shots: Path
    dialogs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", self._console)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        text = str(message.text)
        if re.search(r"Content.Security.Policy|Trusted Type|Refused to", text):
            self.problems.append(f"console: {text}")

    # --- navigation -------------------------------------------------------------------

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/#/{route}")

    def go(self, route: str) -> None:
        """Follow an in-app route without reloading (the page stays the same document)."""
        self.page.evaluate("(route) => { location.hash = route; }", f"/{route}")

    def sign_in(self, token: str) -> None:
        self.open("adapters")
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("button", name="Sign out")).to_be_visible()

    def mark_document(self) -> None:
        """Tag the loaded document; `assert_not_reloaded` proves no reload happened since."""
        self.page.evaluate("() => { window.__portalTestMark = 'kept'; }")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("() => window.__portalTestMark") == "kept", "the page reloaded"

    def shoot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    # --- reading ----------------------------------------------------------------------

    def table(self, name: str) -> Locator:
        return self.page.get_by_role("table", name=name)

    def rows(self, name: str) -> list[dict[str, str]]:
        """The body rows of table `name` as {column header: cell text}."""
        table = self.table(name)
        headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
        found = []
        for row in table.locator("tbody").get_by_role("row").all():
            cells = [c.strip() for c in row.get_by_role("cell").all_inner_texts()]
            found.append(dict(zip(headers, cells, strict=True)))
        return found

    def statuses(self) -> dict[str, str]:
        """Adapter name -> status word, as the Adapters table shows them."""
        return {r["Name"]: r["Status"].split()[0] for r in self.rows("Adapters") if r["Status"]}

    def definition(self, term: str) -> Locator:
        """The value (definition) that follows the term `term` in a status bar."""
        found = self.page.get_by_role("term").filter(has_text=re.compile(f"^{re.escape(term)}$"))
        return found.locator("xpath=following-sibling::*[1]")

    def usable_buttons(self) -> list[str]:
        """Names of the enabled buttons that could change something."""
        names = []
        for button in self.page.get_by_role("button").all():
            if button.is_visible() and button.is_enabled():
                name = (button.get_attribute("aria-label") or button.inner_text()).strip()
                if name not in NAV_BUTTONS:
                    names.append(name)
        return names

    def check_clean(self) -> None:
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.problems, f"the page reported problems: {self.problems}"
