// The connection console of one adapter: status bar, actions, slots, live event log,
// and the configuration (editable by admins; refused edits change nothing).

import { ApiError, del, enc, get, patch, post, session } from "./api.js";
import { adapterFields, connectorOffers } from "./adapter-form.js";
import { field, h, messageLine, select, setText, statusBadge, table, time } from "./dom.js";

const LEVELS = ["info", "warning", "error"];
const CATEGORIES = ["connection", "action", "system"];
const EVENT_LIMIT = 200;

export function adapterPage(app, id) {
  const base = `/api/v1/adapters/${enc(id)}`;
  const message = messageLine();
  let adapter = null;

  const heading = h("h1", {}, "Adapter");
  const status = h("span");
  const statusDetail = h("span", { class: "detail" });
  const bar = {
    status: field("Status", ""), admin: field("Admin state", ""), owner: field("Owner pod", ""),
    standbys: field("Standby pods", ""), epoch: field("Epoch", ""),
    checkIn: field("Last check-in", ""), connector: field("Connector", ""),
    mode: field("Mode", ""),
  };
  bar.status.value.replaceChildren(status, statusDetail);
  const statusBar = h("dl", { class: "statusbar" }, Object.values(bar).map((f) => f.item));

  // --- actions ---------------------------------------------------------------------
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const confirmLine = h("div", { class: "confirm", hidden: true });
  const buttons = {};
  if (session.can("operator")) {
    buttons.enable = h("button", { type: "button", onclick: () => act("enable") }, "Enable");
    buttons.disable = h("button", { type: "button", onclick: () => act("disable") }, "Disable");
    buttons.reset = h("button", { type: "button", onclick: () => confirm("reset") },
      "Reset session");
  }
  if (session.can("admin")) {
    buttons.delete = h("button", { type: "button", class: "danger",
      onclick: () => confirm("delete") }, "Delete");
  }
  const deleteHint = h("p", { class: "hint", id: "delete-hint" });
  if (buttons.delete) buttons.delete.setAttribute("aria-describedby", "delete-hint");
  actions.append(...Object.values(buttons));

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

  // --- slots and events ------------------------------------------------------------
  const slots = table("Slots", ["Slot", "Status", "Owner pod", "Epoch", "Standby pods", "Detail"],
    { hiddenCaption: true });
  const events = table("Event log", ["Time", "Level", "Category", "Description", "Details"],
    { hiddenCaption: true });
  const levelFilter = select([["", "Any"], ...LEVELS.map((l) => [l, l])]);
  const categoryFilter = select([["", "Any"], ...CATEGORIES.map((c) => [c, c])]);
  levelFilter.id = "event-level";
  categoryFilter.id = "event-category";
  let lastEvents = [];
  levelFilter.addEventListener("change", () => renderEvents(lastEvents));
  categoryFilter.addEventListener("change", () => renderEvents(lastEvents));
  const eventCount = h("p", { class: "count" });

  function details(data) {
    return Object.entries(data || {}).filter(([key]) => key !== "slot")
      .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
      .join("  ");
  }

  function renderEvents(items) {
    lastEvents = items;
    const shown = items.filter((e) => (!levelFilter.value || e.level === levelFilter.value) &&
      (!categoryFilter.value || e.category === categoryFilter.value));
    events.body.replaceChildren(...shown.map((e) => h("tr", { class: `level-${e.level}` },
      h("td", { class: "nowrap" }, time(e.time)), h("td", {}, e.level), h("td", {}, e.category),
      h("td", {}, e.description),
      h("td", { class: "details" }, details(e.details)))));
    eventCount.textContent = `${shown.length} of ${items.length} latest events shown, newest first`;
  }

  // --- configuration ---------------------------------------------------------------
  const form = adapterFields();
  const formMessage = messageLine();
  let dirty = false;
  form.node.addEventListener("input", () => { dirty = true; });
  form.node.addEventListener("change", () => { dirty = true; });
  const save = h("button", { type: "submit" }, "Save configuration");
  const discard = h("button", { type: "button", class: "quiet", onclick: () => {
    dirty = false;
    form.clear();
    formMessage.clear();
    if (adapter) form.fill(adapter);
  } }, "Discard changes");
  const configView = h("pre", { class: "config" });
  const editor = session.can("admin")
    ? h("form", { class: "editor", novalidate: true, onsubmit: submit, "aria-label": "Configuration" },
      form.node, h("div", { class: "actions" }, save, discard), formMessage.el)
    : h("div", {}, h("p", { class: "hint" }, "Only admins can change the configuration."),
      configView);

  async function submit(event) {
    event.preventDefault();
    formMessage.clear();
    const values = form.values();
    if (!values) {
      formMessage.error("Not saved: fix the fields marked above. Nothing was changed.");
      return;
    }
    const changes = {};
    for (const key of ["connector", "mode", "instances", "config", "artifacts"]) {
      if (JSON.stringify(values[key]) !== JSON.stringify(adapter[key])) changes[key] = values[key];
    }
    if (!Object.keys(changes).length) {
      formMessage.info("Nothing to save: the form matches the stored configuration.");
      return;
    }
    save.disabled = true;
    try {
      adapter = await patch(base, { ...changes, revision: adapter.revision });
      dirty = false;
      form.fill(adapter);
      formMessage.info(`Saved (revision ${adapter.revision}).`);
    } catch (error) {
      refused(error);
    } finally {
      save.disabled = false;
    }
  }

  function refused(error) {
    if (error instanceof ApiError && error.status === 409) {
      formMessage.error("Not saved: the adapter was changed meanwhile. " +
        "Use Discard changes to load the current configuration. Nothing was changed.");
    } else if (error instanceof ApiError && error.status === 400 &&
      form.showServerError(error.message)) {
      formMessage.error("Not saved: the cluster refused the field marked above. Nothing was changed.");
    } else {
      formMessage.error(`Not saved: ${error.message}. Nothing was changed.`);
    }
  }

  // --- refresh -----------------------------------------------------------------------
  function show(a) {
    adapter = a;
    heading.textContent = a.name;
    document.title = `${a.name} — raftorch Portal`;
    if (status.textContent !== a.status) status.replaceChildren(statusBadge(a.status));
    statusDetail.textContent = a.status_detail ? ` ${a.status_detail}` : "";
    setText(bar.admin.value, a.admin_state);
    setText(bar.owner.value, a.owner_pod);
    setText(bar.standbys.value, (a.standby_pods || []).join(", "));
    setText(bar.epoch.value, a.epoch);
    setText(bar.checkIn.value, a.last_check_in ? time(a.last_check_in)
      : a.owner_pod ? "known to the leader only" : "");
    setText(bar.connector.value, a.connector);
    setText(bar.mode.value, a.instances > 1 ? `${a.mode} ×${a.instances}` : a.mode);
    const enabled = a.admin_state === "ENABLED";
    if (buttons.enable) buttons.enable.disabled = enabled;
    if (buttons.disable) buttons.disable.disabled = !enabled;
    if (buttons.delete) {
      buttons.delete.disabled = enabled;
      deleteHint.textContent = enabled ? "Disable the adapter to delete it." : "";
    }
    slots.body.replaceChildren(...(a.slots || []).map((s) => h("tr", {},
      h("td", { title: s.slot }, `#${s.slot.split("/").pop()}`), h("td", {}, statusBadge(s.status)), h("td", {}, s.owner_pod || "—"),
      h("td", {}, s.epoch ?? "—"), h("td", {}, s.standby_pods.join(", ") || "—"),
      h("td", {}, s.detail || ""))));
    configView.textContent = JSON.stringify({ connector: a.connector, mode: a.mode,
      instances: a.instances, artifacts: a.artifacts, config: a.config }, null, 2);
    if (!dirty) form.fill(a);
  }

  let offersLoaded = false;
  async function refresh() {
    try {
      const [a, log] = await Promise.all([get(base),
        get(`${base}/events?limit=${EVENT_LIMIT}`).catch((e) => ({ error: e }))]);
      show(a);
      if (log.error) message.error(`Event log unavailable: ${log.error.message}`);
      else renderEvents(log.items);
      if (!offersLoaded && session.can("admin")) {
        offersLoaded = true;
        form.setConnectors(await connectorOffers(get), dirty ? undefined : a.connector);
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        app.go("/adapters", "That adapter does not exist (any more).");
        return;
      }
      message.error(`Cannot load the adapter: ${error.message}`);
    }
  }

  const node = h("section", { class: "page" },
    h("p", { class: "crumbs" }, h("a", { href: "#/adapters" }, "Adapters")),
    heading,
    h("section", { "aria-label": "Connection status" }, statusBar, actions, deleteHint,
      confirmLine, message.el),
    h("h2", {}, "Slots"), h("div", { class: "scroll" }, slots.table),
    h("h2", {}, "Event log"),
    h("div", { class: "filters" }, h("label", { for: "event-level" }, "Level"), levelFilter,
      h("label", { for: "event-category" }, "Category"), categoryFilter),
    eventCount, h("div", { class: "scroll" }, events.table),
    h("h2", {}, "Configuration"), editor);
  return { title: "Adapter", node, refresh };
}
