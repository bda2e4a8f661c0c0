// Cluster: the Raft leader and term, the replicas with their roles, and their health as
// the replica serving this page sees it (GET /api/v1/cluster/health): its own readiness
// and quorum, and for every peer whether its Raft link to it works.

import { get } from "./api.js";
import { field, h, messageLine, setText, statusBadge, table } from "./dom.js";

function replicaLink(url) {
  try {
    const parsed = new URL(url);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      return h("a", { href: `${parsed.origin}/` }, parsed.origin);
    }
  } catch { /* not a URL: shown as text */ }
  return String(url);
}

function readiness(health) {
  return health.ready ? "ready" : `not ready: ${health.reason}`;
}

function peerHealth(peer, me) {
  if (!peer || peer.connected === null || peer.connected === undefined) return "not known here";
  return peer.connected ? `Raft link from ${me} up` : `unreachable from ${me}`;
}

export function clusterPage() {
  const message = messageLine();
  const summary = { leader: field("Leader", ""), term: field("Term", ""),
    here: field("This replica", ""), health: field("Health of this replica", ""),
    quorum: field("Quorum", "") };
  const replicas = h("div", { class: "scroll" });

  async function refresh() {
    let cluster;
    let health;
    try {
      [cluster, health] = await Promise.all([get("/api/v1/cluster"),
        get("/api/v1/cluster/health")]);
    } catch (error) {
      message.error(`Cannot load the cluster: ${error.message}`);
      return;
    }
    const me = health.replica || "this replica";
    setText(summary.leader.value, cluster.leader || "none (election in progress)");
    setText(summary.term.value, cluster.term);
    setText(summary.here.value, health.replica);
    setText(summary.health.value, readiness(health));
    setText(summary.quorum.value, health.has_quorum ? "yes" : "no: fewer than a majority reachable");
    const peers = new Map(health.peers.filter((p) => p.id).map((p) => [p.id, p]));
    const { table: tableEl, body } = table("Replicas", ["Replica", "Role", "API", "Health"],
      { hiddenCaption: true });
    for (const r of cluster.replicas) {
      const text = r.id === health.replica ? readiness(health) : peerHealth(peers.get(r.id), me);
      body.append(h("tr", {}, h("td", {}, r.id), h("td", {}, statusBadge(r.role)),
        h("td", {}, replicaLink(r.api_url)), h("td", {}, text)));
    }
    replicas.replaceChildren(tableEl);
  }

  return { title: "Cluster", node: h("section", { class: "page" }, h("h1", {}, "Cluster"),
    message.el, h("dl", { class: "statusbar" }, Object.values(summary).map((f) => f.item)),
    h("h2", {}, "Replicas"), replicas), refresh };
}
