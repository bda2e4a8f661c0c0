// Cluster: the Raft leader and term, the replicas with their roles, and the health of
// the replica serving this page (GET /readyz). A browser may only talk to the replica
// that served the Portal, so the others' readiness is shown by their own Portal.

import { get } from "./api.js";
import { field, h, messageLine, setText, statusBadge, table } from "./dom.js";

function sameOrigin(url) {
  try { return new URL(url).origin === location.origin; } catch { return false; }
}

function replicaLink(url) {
  try {
    const parsed = new URL(url);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      return h("a", { href: `${parsed.origin}/` }, parsed.origin);
    }
  } catch { /* not a URL: shown as text */ }
  return String(url);
}

export function clusterPage() {
  const message = messageLine();
  const summary = { leader: field("Leader", ""), term: field("Term", ""),
    here: field("This replica", ""), health: field("Health of this replica", "") };
  const replicas = h("div", { class: "scroll" });

  async function refresh() {
    let cluster;
    try {
      cluster = await get("/api/v1/cluster");
    } catch (error) {
      message.error(`Cannot load the cluster: ${error.message}`);
      return;
    }
    let ready;
    try {
      const answer = await fetch("/readyz", { cache: "no-store" });
      ready = await answer.json();
    } catch (error) {
      ready = { ready: false, reason: `no answer: ${error.message}` };
    }
    const here = cluster.replicas.find((r) => sameOrigin(r.api_url));
    setText(summary.leader.value, cluster.leader || "none (election in progress)");
    setText(summary.term.value, cluster.term);
    setText(summary.here.value, here ? `${here.id} (${here.role})` : location.origin);
    setText(summary.health.value, ready.ready ? "ready" : `not ready: ${ready.reason}`);
    const { table: tableEl, body } = table("Replicas", ["Replica", "Role", "API", "Health"],
      { hiddenCaption: true });
    for (const r of cluster.replicas) {
      const health = sameOrigin(r.api_url) ? (ready.ready ? "ready" : `not ready: ${ready.reason}`)
        : "shown by its own Portal";
      body.append(h("tr", {}, h("td", {}, r.id), h("td", {}, statusBadge(r.role)),
        h("td", {}, replicaLink(r.api_url)), h("td", {}, health)));
    }
    replicas.replaceChildren(tableEl);
  }

  return { title: "Cluster", node: h("section", { class: "page" }, h("h1", {}, "Cluster"),
    message.el, h("dl", { class: "statusbar" }, Object.values(summary).map((f) => f.item)),
    h("h2", {}, "Replicas"), replicas), refresh };
}
