// Pods: state, sessions (by adapter name), last heartbeat, what each offers.

import { get, getAll, session } from "./api.js";
import { h, link, messageLine, setText, statusBadge, table, time } from "./dom.js";

// Hook for per-pod actions (drain / undrain come with the placement work): answer the
// buttons for `pod`, given the signed-in role; the Actions column appears when any
// pod has one. Nothing is offered yet, because the admin API has no drain call.
export function podActions(_pod, _can) {
  return [];
}

export function podsPage(app) {
  const message = messageLine();
  const columns = ["Pod", "State", "Sessions", "Last heartbeat", "Address", "Connectors",
    "Capacity", "Labels"];
  const holder = h("div", { class: "scroll" });
  const count = h("p", { class: "count" });

  function sessionsCell(pod, names) {
    if (!pod.sessions.length) return "none";
    return h("ul", { class: "plain" }, pod.sessions.map((s) => {
      const [adapterId, index] = s.slot.split("/");
      const name = names.get(adapterId);
      const label = name ? `${name}${index && index !== "0" ? ` #${index}` : ""}` : s.slot;
      return h("li", {}, name ? link(label, "adapters", adapterId) : label,
        ` ${s.role}${s.epoch ? `, epoch ${s.epoch}` : ""}`);
    }));
  }

  async function refresh() {
    let pods;
    let adapters = [];
    try {
      [pods, adapters] = await Promise.all([get("/api/v1/pods").then((r) => r.items),
        getAll("/api/v1/adapters?configs=false").then((r) => r.items).catch(() => [])]);
    } catch (error) {
      message.error(`Cannot load pods: ${error.message}`);
      return;
    }
    const names = new Map(adapters.map((a) => [a.id, a.name]));
    const perPod = pods.map((pod) => podActions(pod, (role) => session.can(role)));
    const withActions = perPod.some((buttons) => buttons.length);
    const { table: tableEl, body } = table("Pods", withActions ? [...columns, "Actions"] : columns,
      { hiddenCaption: true });
    pods.forEach((pod, i) => {
      const labels = Object.entries(pod.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      const heartbeat = h("td");
      setText(heartbeat, pod.last_heartbeat ? time(pod.last_heartbeat) : "known to the leader only");
      body.append(h("tr", {}, h("td", {}, pod.id), h("td", {}, statusBadge(pod.state)),
        h("td", {}, sessionsCell(pod, names)), heartbeat, h("td", {}, pod.address || "—"),
        h("td", {}, pod.connectors.join(", ") || "—"), h("td", {}, String(pod.capacity)),
        h("td", {}, labels || "—"), withActions ? h("td", {}, perPod[i]) : null));
    });
    holder.replaceChildren(tableEl);
    count.textContent = `${pods.length} registered pods`;
  }

  return { title: "Pods", node: h("section", { class: "page" }, h("h1", {}, "Pods"),
    message.el, count, holder), refresh };
}
