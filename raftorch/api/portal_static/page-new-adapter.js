// New adapter (admin): name, connector (from those pods offer), mode, instances,
// artifacts, configuration as JSON. Created DISABLED, then shown on its own page.
// Connectors do not publish a configuration schema yet, so the configuration is JSON.

import { ApiError, get, post, session } from "./api.js";
import { adapterFields, connectorOffers } from "./adapter-form.js";
import { h, messageLine } from "./dom.js";

export function newAdapterPage(app) {
  if (!session.can("admin")) {
    return { title: "New adapter", node: h("section", { class: "page" },
      h("h1", {}, "New adapter"),
      h("p", {}, `Creating adapters needs the admin role; you are signed in as ${session.role}.`)) };
  }
  const form = adapterFields({ withName: true });
  form.fill({ name: "", mode: "single", instances: 1, artifacts: [], config: {} });
  const message = messageLine();
  const create = h("button", { type: "submit" }, "Create adapter");

  async function submit(event) {
    event.preventDefault();
    message.clear();
    const values = form.values();
    if (!values) {
      message.error("Not created: fix the fields marked above.");
      return;
    }
    create.disabled = true;
    try {
      const adapter = await post("/api/v1/adapters", values);
      app.go(`/adapters/${encodeURIComponent(adapter.id)}`,
        `Created ${adapter.name}; it is DISABLED until you enable it.`);
    } catch (error) {
      const marked = error instanceof ApiError && error.status < 500 &&
        form.showServerError(error.message);
      const what = values.name ? `Adapter “${values.name}” not created` : "Not created";
      message.error(marked ? `${what}: the cluster refused the field marked above.`
        : `${what}: ${error.message}`);
    } finally {
      create.disabled = false;
    }
  }

  let loaded = false;
  async function refresh() {
    if (loaded) return;
    loaded = true;
    form.setConnectors(await connectorOffers(get));
  }

  const node = h("section", { class: "page" },
    h("p", { class: "crumbs" }, h("a", { href: "#/adapters" }, "Adapters")),
    h("h1", {}, "New adapter"),
    h("form", { class: "editor", novalidate: true, onsubmit: submit, "aria-label": "New adapter" },
      form.node, h("div", { class: "actions" }, create), message.el));
  return { title: "New adapter", node, refresh };
}
