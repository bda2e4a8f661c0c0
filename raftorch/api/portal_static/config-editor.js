// An adapter's configuration: an editor for admins (refused edits change nothing and are
// shown next to their field), read-only text for everyone else.

import { ApiError, patch, session } from "./api.js";
import { adapterFields, connectorOffers } from "./adapter-form.js";
import { h, messageLine } from "./dom.js";

const EDITABLE = ["connector", "mode", "instances", "config", "artifacts"];

function readOnly() {
  const view = h("pre", { class: "config" });
  return {
    node: h("div", {}, h("p", { class: "hint" }, "Only admins can change the configuration."),
      view),
    show(a) {
      view.textContent = JSON.stringify({ connector: a.connector, mode: a.mode,
        instances: a.instances, artifacts: a.artifacts, config: a.config }, null, 2);
    },
    async loadOffers() {},
  };
}

export function configEditor(path, onSaved) {
  if (!session.can("admin")) return readOnly();
  const form = adapterFields();
  const message = messageLine();
  let adapter = null;
  let dirty = false; // edits in progress are never overwritten by a live refresh
  form.node.addEventListener("input", () => { dirty = true; });
  form.node.addEventListener("change", () => { dirty = true; });
  const save = h("button", { type: "submit" }, "Save configuration");
  const discard = h("button", { type: "button", class: "quiet", onclick: () => {
    dirty = false;
    form.clear();
    message.clear();
    if (adapter) form.fill(adapter);
  } }, "Discard changes");

  function refused(error) {
    if (error instanceof ApiError && error.status === 409) {
      message.error("Not saved: the adapter was changed meanwhile. " +
        "Use Discard changes to load the current configuration. Nothing was changed.");
    } else if (error instanceof ApiError && error.status === 400 &&
      form.showServerError(error.message)) {
      message.error("Not saved: the cluster refused the field marked above. Nothing was changed.");
    } else {
      message.error(`Not saved: ${error.message}. Nothing was changed.`);
    }
  }

  async function submit(event) {
    event.preventDefault();
    message.clear();
    const values = form.values();
    if (!values) {
      message.error("Not saved: fix the fields marked above. Nothing was changed.");
      return;
    }
    const changes = {};
    for (const key of EDITABLE) {
      if (JSON.stringify(values[key]) !== JSON.stringify(adapter[key])) changes[key] = values[key];
    }
    if (!Object.keys(changes).length) {
      message.info("Nothing to save: the form matches the stored configuration.");
      return;
    }
    save.disabled = true;
    try {
      const saved = await patch(path, { ...changes, revision: adapter.revision });
      dirty = false;
      show(saved);
      message.info(`Saved (revision ${saved.revision}).`);
      onSaved(saved);
    } catch (error) {
      refused(error);
    } finally {
      save.disabled = false;
    }
  }

  function show(a) {
    adapter = a;
    if (!dirty) form.fill(a);
  }

  let offers = false;
  async function loadOffers(get) {
    if (offers) return;
    offers = true;
    form.setConnectors(await connectorOffers(get), dirty ? undefined : adapter.connector);
  }

  const node = h("form", { class: "editor", novalidate: true, onsubmit: submit,
    "aria-label": "Configuration" }, form.node, h("div", { class: "actions" }, save, discard),
  message.el);
  return { node, show, loadOffers };
}
