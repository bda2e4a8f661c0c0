// The fields of an adapter's configuration, shared by "New adapter" and the detail
// page's editor: parsed and checked in the browser first, and every refusal of the
// server shown next to the field it names.

import { control, h, select } from "./dom.js";

const MODES = [["single", "single"], ["active_passive", "active_passive"],
  ["scale_out", "scale_out"]];

export function adapterFields({ withName = false } = {}) {
  const fields = {
    name: withName ? control("Name", h("input", { type: "text", autocomplete: "off" }),
      { hint: "Letters, digits, '.', '_' or '-'; at most 128." }) : null,
    connector: control("Connector", h("select"), { hint: "The connector types pods offer." }),
    mode: control("Mode", select(MODES)),
    instances: control("Instances", h("input", { type: "number", min: "1", max: "1000", step: "1" }),
      { hint: "Session slots; more than 1 only for scale_out." }),
    artifacts: control("Artifacts", h("input", { type: "text", autocomplete: "off" }),
      { hint: "Names of artifacts the connector needs, comma-separated." }),
    config: control("Configuration (JSON)", h("textarea", { rows: "10", spellcheck: "false" }),
      { hint: "The connector's settings as one JSON object." }),
  };
  let offered = null; // null until the offers are loaded
  setConnectors(null);

  // Options from `offers`, keeping the current choice even when no pod offers it now.
  function setConnectors(offers, keep = fields.connector.input.value) {
    offered = offers;
    const options = (offers || []).map((o) => h("option", { value: o.connector }, `${o.connector} (${o.label})`));
    if (keep && !(offers || []).some((o) => o.connector === keep)) {
      const why = offers ? "no live pod offers it now" : "current";
      options.unshift(h("option", { value: keep }, `${keep} (${why})`));
    }
    if (!options.length) {
      options.push(h("option", { value: "" },
        offers ? "no pod has offered a connector yet" : "loading the connectors pods offer…"));
    }
    fields.connector.input.replaceChildren(...options);
    fields.connector.input.value = keep && options.some((o) => o.value === keep) ? keep
      : options[0].value;
  }

  function all() { return Object.values(fields).filter(Boolean); }

  function clear() { for (const f of all()) f.clear(); }

  function fill(adapter) {
    if (fields.name) fields.name.input.value = adapter.name || "";
    setConnectors(offered, adapter.connector || "");
    fields.mode.input.value = adapter.mode || "single";
    fields.instances.input.value = String(adapter.instances || 1);
    fields.artifacts.input.value = (adapter.artifacts || []).join(", ");
    fields.config.input.value = JSON.stringify(adapter.config || {}, null, 2);
  }

  // The values as API fields, or null after marking what is wrong.
  function values() {
    clear();
    let ok = true;
    const out = {};
    if (fields.name) out.name = fields.name.input.value.trim();
    out.connector = fields.connector.input.value.trim();
    if (!out.connector) {
      fields.connector.fail("Choose a connector: none is offered by a pod yet.");
      ok = false;
    }
    out.mode = fields.mode.input.value;
    const instances = Number(fields.instances.input.value);
    if (!Number.isInteger(instances) || instances < 1 || instances > 1000) {
      fields.instances.fail("A whole number from 1 to 1000.");
      ok = false;
    }
    out.instances = instances;
    out.artifacts = fields.artifacts.input.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      out.config = JSON.parse(fields.config.input.value || "{}");
      if (out.config === null || typeof out.config !== "object" || Array.isArray(out.config)) {
        fields.config.fail("The configuration must be a JSON object, like {\"host\": \"…\"}.");
        ok = false;
      }
    } catch (error) {
      fields.config.fail(`Not valid JSON: ${error.message}`);
      ok = false;
    }
    return ok ? out : null;
  }

  // Put the server's message next to the field it is about; answers whether one matched.
  function showServerError(message) {
    const at = /\$\.([a-z_]+)/.exec(message);
    const order = ["instances", "artifacts", "mode", "connector", "config", "name"];
    const key = at && fields[at[1]] ? at[1]
      : order.find((k) => fields[k] && new RegExp(`\\b${k}\\b`).test(message));
    if (!key) return false;
    fields[key].fail(message);
    fields[key].input.focus();
    return true;
  }

  const node = h("div", { class: "fields" }, all().map((f) => f.wrap));
  return { node, fields, fill, values, clear, showServerError, setConnectors };
}

// Connector types for the form: those live pods offer first, then those seen before.
export async function connectorOffers(get) {
  const [pods, plugins] = await Promise.all([
    get("/api/v1/pods").then((r) => r.items).catch(() => []),
    get("/api/v1/plugins").then((r) => r.items).catch(() => []),
  ]);
  const live = new Map();
  for (const pod of pods) {
    if (pod.state !== "ACTIVE") continue;
    for (const connector of pod.connectors) live.set(connector, (live.get(connector) || 0) + 1);
  }
  const offers = [...live].sort().map(([connector, n]) =>
    ({ connector, live: true, label: `offered by ${n} live pod${n === 1 ? "" : "s"}` }));
  for (const plugin of plugins) {
    if (!live.has(plugin.connector) && !offers.some((o) => o.connector === plugin.connector)) {
      offers.push({ connector: plugin.connector, live: false, label: "no live pod offers it now" });
    }
  }
  return offers;
}
