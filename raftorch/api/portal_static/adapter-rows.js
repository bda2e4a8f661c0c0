// Rows of the Adapters table, kept per adapter id and updated in place, so a live
// refresh changes only the cells whose text changed (focus and selection stay).

import { h, link, setText, statusBadge, time } from "./dom.js";

export const COLUMNS = ["Name", "Connector", "Mode", "Admin state", "Status", "Owner pod",
  "Standbys", "Epoch", "Last check-in"];

// A row for `adapter`; with `onToggle` it starts with a checkbox named after the adapter.
export function newRow(adapter, onToggle) {
  const cells = {};
  const tds = COLUMNS.map((column) => (cells[column] = h("td")));
  cells.Name.append(link(adapter.name, "adapters", adapter.id));
  cells.Status.replaceChildren(h("span"), h("span", { class: "detail" }));
  let box = null;
  if (onToggle) {
    box = h("input", { type: "checkbox", "aria-label": `Select ${adapter.name}` });
    box.addEventListener("change", () => onToggle(adapter.id, box.checked));
    tds.unshift(h("td", {}, box));
  }
  return { tr: h("tr", {}, tds), cells, box, adapter };
}

export function updateRow(row, a) {
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

// Bring `body` in line with `items` (in their order), reusing the rows in `rows`;
// answers the ids that went away.
export function syncRows(body, rows, items, onToggle) {
  const seen = new Set();
  items.forEach((adapter, index) => {
    seen.add(adapter.id);
    let row = rows.get(adapter.id);
    if (!row) {
      row = newRow(adapter, onToggle);
      rows.set(adapter.id, row);
    }
    updateRow(row, adapter);
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
  });
  const gone = [];
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
      gone.push(id);
    }
  }
  return gone;
}
