// The connection console of one adapter: status bar, actions, slots, the live event log
// and the configuration.

import { ApiError, del, enc, get, post, session } from "./api.js";
import { configEditor } from "./config-editor.js";
import { field, h, messageLine, setText, statusBadge, table, time } from "./dom.js";
import { eventLog } from "./event-log.js";

const EVENT_LIMIT = 200;

// Enable, Disable, Reset session (operator) and Delete (admin, only when disabled);
// the destructive two ask for a confirmation in the page (no dialog).
function actionBar(base, app, message) {
  let adapter = null;
  const node = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const confirmLine = h("div", { class: "confirm", hidden: true });
  const hint = h("p", { class: "hint", id: "delete-hint" });
  const buttons = {};

  async function act(action) {
    try {
      await post(`${base}/${action}`);
      const done = { enable: "Enable requested", disable: "Disable requested",
        reset: "Session state reset" }[action];
      message.info(`${done}; the status follows live.`);
    } catch (error) {
      message.error(`${action} failed, nothing changed: ${error.message}`);
    }
    await app.refresh();
  }

  async function remove() {
    try {
      await del(base);
      app.go("/adapters", `Deleted ${adapter.name}.`);
    } catch (error) {
      message.error(`Delete failed, nothing changed: ${error.message}`);
    }
  }

  function confirm(what) {
    const text = what === "delete"
      ? `Delete ${adapter.name} and its event log? This cannot be undone.`
      : `Forget the session state of ${adapter.name} (sequence numbers, offsets)?`;
    const yes = h("button", { type: "button", class: "danger", onclick: async () => {
      confirmLine.hidden = true;
      await (what === "delete" ? remove() : act("reset"));
    } }, what === "delete" ? "Confirm delete" : "Confirm reset");
    const no = h("button", { type: "button", class: "quiet",
      onclick: () => { confirmLine.hidden = true; } }, "Cancel");
    confirmLine.replaceChildren(h("span", {}, text), yes, no);
    confirmLine.hidden = false;
    yes.focus();
  }

  if (session.can("operator")) {
    buttons.enable = h("button", { type: "button", onclick: () => act("enable") }, "Enable");
    buttons.disable = h("button", { type: "button", onclick: () => act("disable") }, "Disable");
    buttons.reset = h("button", { type: "button", onclick: () => confirm("reset") },
      "Reset session");
  }
  if (session.can("admin")) {
    buttons.delete = h("button", { type: "button", class: "danger", "aria-describedby": hint.id,
      onclick: () => confirm("delete") }, "Delete");
  }
  node.append(...Object.values(buttons));

  function show(a) {
    adapter = a;
    const enabled = a.admin_state === "ENABLED";
    if (buttons.enable) buttons.enable.disabled = enabled;
    if (buttons.disable) buttons.disable.disabled = !enabled;
    if (buttons.delete) {
      buttons.delete.disabled = enabled;
      hint.textContent = enabled ? "Disable the adapter to delete it." : "";
    }
  }
  return { node: h("div", {}, node, hint, confirmLine), show };
}

function statusBar() {
  const status = h("span");
  const detail = h("span", { class: "detail" });
  const f = {
    status: field("Status", ""), admin: field("Admin state", ""), owner: field("Owner pod", ""),
    standbys: field("Standby pods", ""), epoch: field("Epoch", ""),
    checkIn: field("Last check-in", ""), connector: field("Connector", ""),
    mode: field("Mode", ""),
  };
  f.status.value.replaceChildren(status, detail);

  function show(a) {
    if (status.textContent !== a.status) status.replaceChildren(statusBadge(a.status));
    detail.textContent = a.status_detail ? ` ${a.status_detail}` : "";
    setText(f.admin.value, a.admin_state);
    setText(f.owner.value, a.owner_pod);
    setText(f.standbys.value, (a.standby_pods || []).join(", "));
    setText(f.epoch.value, a.epoch);
    const unknown = a.owner_pod ? "known to the leader only" : "";
    setText(f.checkIn.value, a.last_check_in ? time(a.last_check_in) : unknown);
    setText(f.connector.value, a.connector);
    setText(f.mode.value, a.instances > 1 ? `${a.mode} ×${a.instances}` : a.mode);
  }
  return { node: h("dl", { class: "statusbar" }, Object.values(f).map((x) => x.item)), show };
}

function slotTable() {
  const slots = table("Slots", ["Slot", "Status", "Owner pod", "Epoch", "Standby pods", "Detail"],
    { hiddenCaption: true });
  function show(a) {
    slots.body.replaceChildren(...(a.slots || []).map((s) => h("tr", {},
      h("td", { title: s.slot }, `#${s.slot.split("/").pop()}`), h("td", {}, statusBadge(s.status)),
      h("td", {}, s.owner_pod || "—"), h("td", {}, s.epoch ?? "—"),
      h("td", {}, s.standby_pods.join(", ") || "—"), h("td", {}, s.detail || ""))));
  }
  return { node: h("div", { class: "scroll" }, slots.table), show };
}

export function adapterPage(app, id) {
  const base = `/api/v1/adapters/${enc(id)}`;
  const message = messageLine();
  const heading = h("h1", {}, "Adapter");
  const bar = statusBar();
  const actions = actionBar(base, app, message);
  const slots = slotTable();
  const log = eventLog();
  const editor = configEditor(base, () => app.refresh());
  const flash = app.takeFlash();
  if (flash) message.info(flash);

  function show(a) {
    heading.textContent = a.name;
    document.title = `${a.name} — raftorch Portal`;
    for (const part of [bar, actions, slots, editor]) part.show(a);
  }

  async function refresh() {
    let adapter;
    try {
      adapter = await get(base);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        app.go("/adapters", "That adapter does not exist (any more).");
      } else {
        message.error(`Cannot load the adapter: ${error.message}`);
      }
      return;
    }
    show(adapter);
    try {
      log.render((await get(`${base}/events?limit=${EVENT_LIMIT}`)).items);
    } catch (error) {
      message.error(`Event log unavailable: ${error.message}`);
    }
    await editor.loadOffers(get);
  }

  const node = h("section", { class: "page" },
    h("p", { class: "crumbs" }, h("a", { href: "#/adapters" }, "Adapters")), heading,
    h("section", { "aria-label": "Connection status" }, bar.node, actions.node, message.el),
    h("h2", {}, "Slots"), slots.node, h("h2", {}, "Event log"), log.node,
    h("h2", {}, "Configuration"), editor.node);
  return { title: "Adapter", node, refresh };
}
