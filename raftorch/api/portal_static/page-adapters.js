// Adapters: one row per adapter, filters, select all, Enable/Disable on the selection
// (POST /api/v1/adapters/bulk). Rows are updated in place when statuses change, so
// the selection, the filters and the focus survive every live refresh.

import { get, post, session } from "./api.js";
import { h, link, messageLine, select, setText, statusBadge, table, time } from "./dom.js";

const STATUSES = ["ACTIVE", "CLAIMING", "INACTIVE", "ERROR"];
const COLUMNS = ["Name", "Connector", "Mode", "Admin state", "Status", "Owner pod", "Standbys",
  "Epoch", "Last check-in"];

export function adaptersPage(app) {
  const canAct = session.can("operator");
  const selected = new Set();
  const rows = new Map(); // adapter id -> {tr, cells, box, adapter}
  const message = messageLine();

  const nameFilter = h("input", { type: "search", id: "filter-name", autocomplete: "off" });
  const statusFilter = select([["", "Any"], ...STATUSES.map((s) => [s, s])]);
  statusFilter.id = "filter-status";
  nameFilter.addEventListener("input", applyFilters);
  statusFilter.addEventListener("change", applyFilters);

  const selectAll = h("input", { type: "checkbox", id: "select-all" });
  selectAll.addEventListener("change", () => {
    for (const [id, row] of rows) {
      if (row.tr.hidden) continue;
      if (selectAll.checked) selected.add(id);
      else selected.delete(id);
    }
    syncSelection();
  });
  const enable = h("button", { type: "button", onclick: () => bulk("enable") }, "Enable");
  const disable = h("button", { type: "button", onclick: () => bulk("disable") }, "Disable");

  const headers = COLUMNS.slice();
  if (canAct) {
    headers.unshift(h("span", {}, selectAll,
      h("label", { for: "select-all", class: "visually-hidden" }, "Select all")));
  }
  const { table: tableEl, body } = table("Adapters", headers, { hiddenCaption: true });
  const empty = h("p", { class: "empty", hidden: true }, "No adapters match.");
  const count = h("p", { class: "count" });

  const toolbar = h("div", { class: "toolbar" },
    h("div", { class: "filters" },
      h("label", { for: "filter-name" }, "Name"), nameFilter,
      h("label", { for: "filter-status" }, "Status"), statusFilter),
    canAct ? h("div", { class: "actions", role: "group", "aria-label": "Selected adapters" },
      enable, disable) : null,
    session.can("admin") ? h("a", { class: "button", href: "#/adapters/new" }, "New adapter") : null);

  function visibleSelection() {
    return [...selected].filter((id) => rows.has(id) && !rows.get(id).tr.hidden);
  }

  function syncSelection() {
    for (const [id, row] of rows) if (row.box) row.box.checked = selected.has(id);
    const visible = [...rows.values()].filter((row) => !row.tr.hidden);
    const chosen = visibleSelection().length;
    selectAll.checked = visible.length > 0 && chosen === visible.length;
    selectAll.indeterminate = chosen > 0 && chosen < visible.length;
    enable.disabled = chosen === 0;
    disable.disabled = chosen === 0;
    count.textContent = `${visible.length} of ${rows.size} adapters shown` +
      (canAct ? `, ${chosen} selected` : "");
  }

  function applyFilters() {
    const text = nameFilter.value.trim().toLowerCase();
    const status = statusFilter.value;
    for (const [id, row] of rows) {
      const a = row.adapter;
      row.tr.hidden = (text && !a.name.toLowerCase().includes(text)) ||
        (status && a.status !== status);
      if (row.tr.hidden) selected.delete(id);
    }
    empty.hidden = [...rows.values()].some((row) => !row.tr.hidden) || rows.size === 0;
    syncSelection();
  }

  async function bulk(action) {
    const ids = visibleSelection();
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

  function newRow(adapter) {
    const cells = {};
    const tds = COLUMNS.map((column) => (cells[column] = h("td")));
    cells.Name.append(link(adapter.name, "adapters", adapter.id));
    cells.Status.replaceChildren(h("span"), h("span", { class: "detail" }));
    let box = null;
    if (canAct) {
      box = h("input", { type: "checkbox", "aria-label": `Select ${adapter.name}` });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(adapter.id);
        else selected.delete(adapter.id);
        syncSelection();
      });
      tds.unshift(h("td", {}, box));
    }
    return { tr: h("tr", {}, tds), cells, box, adapter };
  }

  function update(row, a) {
    row.adapter = a;
    const { cells } = row;
    const nameLink = cells.Name.firstChild;
    if (nameLink.textContent !== a.name) nameLink.textContent = a.name;
    setText(cells.Connector, a.connector);
    setText(cells.Mode, a.instances > 1 ? `${a.mode} ×${a.instances}` : a.mode);
    setText(cells["Admin state"], a.admin_state);
    const [badge, detail] = cells.Status.children;
    if (badge.textContent !== a.status) badge.replaceWith(statusBadge(a.status));
    detail.textContent = a.status_detail || "";
    setText(cells["Owner pod"], a.owner_pod);
    setText(cells.Standbys, (a.standby_pods || []).join(", "));
    setText(cells.Epoch, a.epoch);
    setText(cells["Last check-in"], a.last_check_in ? time(a.last_check_in) : "");
  }

  async function refresh() {
    let items;
    try {
      items = (await get("/api/v1/adapters")).items;
    } catch (error) {
      message.error(`Cannot load adapters: ${error.message}`);
      return;
    }
    const seen = new Set();
    items.forEach((adapter, index) => {
      seen.add(adapter.id);
      let row = rows.get(adapter.id);
      if (!row) {
        row = newRow(adapter);
        rows.set(adapter.id, row);
      }
      update(row, adapter);
      if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
        selected.delete(id);
      }
    }
    applyFilters();
  }

  const flash = app.takeFlash();
  if (flash) message.info(flash);
  const node = h("section", { class: "page" }, h("h1", {}, "Adapters"), toolbar, message.el,
    count, h("div", { class: "scroll" }, tableEl), empty);
  return { title: "Adapters", node, refresh };
}
