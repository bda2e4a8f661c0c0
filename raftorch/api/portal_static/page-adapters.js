// Adapters: one row per adapter, filters, Select all, Enable/Disable on the selection
// (POST /api/v1/adapters/bulk). Rows are updated in place by live refreshes.

import { getAll, post, session } from "./api.js";
import { COLUMNS, syncRows } from "./adapter-rows.js";
import { h, messageLine, select, table } from "./dom.js";

const STATUSES = ["ACTIVE", "CLAIMING", "INACTIVE", "ERROR"];

function filterBar(onChange) {
  const name = h("input", { type: "search", id: "filter-name", autocomplete: "off" });
  const status = select([["", "Any"], ...STATUSES.map((s) => [s, s])]);
  status.id = "filter-status";
  name.addEventListener("input", onChange);
  status.addEventListener("change", onChange);
  return {
    node: h("div", { class: "filters" }, h("label", { for: "filter-name" }, "Name"), name,
      h("label", { for: "filter-status" }, "Status"), status),
    hides(a) {
      const text = name.value.trim().toLowerCase();
      return Boolean((text && !a.name.toLowerCase().includes(text)) ||
        (status.value && a.status !== status.value));
    },
  };
}

export function adaptersPage(app) {
  const canAct = session.can("operator");
  const selected = new Set();
  const rows = new Map(); // adapter id -> {tr, cells, box, adapter}
  const message = messageLine();
  const filters = filterBar(applyFilters);
  const selectAll = h("input", { type: "checkbox", id: "select-all" });
  const enable = h("button", { type: "button", onclick: () => bulk("enable") }, "Enable");
  const disable = h("button", { type: "button", onclick: () => bulk("disable") }, "Disable");
  const headers = canAct ? [h("span", {}, selectAll,
    h("label", { for: "select-all", class: "visually-hidden" }, "Select all")), ...COLUMNS]
    : COLUMNS;
  const { table: tableEl, body } = table("Adapters", headers, { hiddenCaption: true });
  const empty = h("p", { class: "empty", hidden: true }, "No adapters match.");
  const count = h("p", { class: "count" });
  const shown = () => [...rows.entries()].filter(([, row]) => !row.tr.hidden);
  const chosen = () => shown().map(([id]) => id).filter((id) => selected.has(id));

  selectAll.addEventListener("change", () => {
    for (const [id] of shown()) {
      if (selectAll.checked) selected.add(id);
      else selected.delete(id);
    }
    syncSelection();
  });

  function toggle(id, checked) {
    if (checked) selected.add(id);
    else selected.delete(id);
    syncSelection();
  }

  function syncSelection() {
    for (const [id, row] of rows) if (row.box) row.box.checked = selected.has(id);
    const visible = shown().length;
    const picked = chosen().length;
    selectAll.checked = visible > 0 && picked === visible;
    selectAll.indeterminate = picked > 0 && picked < visible;
    enable.disabled = disable.disabled = picked === 0;
    count.textContent = `${visible} of ${rows.size} adapters shown` +
      (canAct ? `, ${picked} selected` : "");
  }

  function applyFilters() {
    for (const [id, row] of rows) {
      row.tr.hidden = filters.hides(row.adapter);
      if (row.tr.hidden) selected.delete(id); // only what is shown can be acted on
    }
    empty.hidden = rows.size === 0 || shown().length > 0;
    syncSelection();
  }

  async function bulk(action) {
    const ids = chosen();
    if (!ids.length) return;
    enable.disabled = disable.disabled = true;
    try {
      const answer = await post("/api/v1/adapters/bulk", { action, ids });
      const verb = action === "enable" ? "Enable" : "Disable";
      message.info(`${verb} requested for ${answer.items.length} adapters; statuses follow live.`);
      selected.clear();
    } catch (error) {
      message.error(`${action} failed, nothing changed: ${error.message}`);
    }
    syncSelection();
    await app.refresh();
  }

  async function refresh() {
    try {
      const { items } = await getAll("/api/v1/adapters?configs=false");
      for (const id of syncRows(body, rows, items, canAct ? toggle : null)) selected.delete(id);
    } catch (error) {
      message.error(`Cannot load adapters: ${error.message}`);
      return;
    }
    applyFilters();
  }

  const toolbar = h("div", { class: "toolbar" }, filters.node,
    canAct ? h("div", { class: "actions", role: "group", "aria-label": "Selected adapters" },
      enable, disable) : null,
    session.can("admin") ? h("a", { class: "button", href: "#/adapters/new" }, "New adapter") : null);
  const flash = app.takeFlash();
  if (flash) message.info(flash);
  const node = h("section", { class: "page" }, h("h1", {}, "Adapters"), toolbar, message.el,
    count, h("div", { class: "scroll" }, tableEl), empty);
  return { title: "Adapters", node, refresh };
}
