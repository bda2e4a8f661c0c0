// Pods: state, sessions (by adapter name), last heartbeat, what each offers; operators
// drain and undrain a pod (POST /api/v1/pods/{id}/drain | /undrain) and ask for a
// rebalance (POST /api/v1/cluster/rebalance). All three move sessions by graceful
// handoff and lose nothing, so, like Enable and Disable, they ask for no confirmation.

import { enc, get, getAll, post, session } from "./api.js";
import { h, link, messageLine, setText, statusBadge, table, time } from "./dom.js";

const owned = (pod) => pod.sessions.filter((s) => s.role === "ACTIVE").length;
const sessions = (n) => `${n} session${n === 1 ? "" : "s"}`;

// The buttons of one pod, given `can(role)`: Drain while it takes sessions, Undrain
// while it is drained; nothing for a viewer. `act(pod, action, button)` carries one out.
// The Actions column appears when any pod has a button.
export function podActions(pod, can, act) {
  if (!can("operator")) return [];
  const action = pod.state === "DRAINING" ? "undrain" : "drain";
  const verb = action === "drain" ? "Drain" : "Undrain";
  const button = h("button", { type: "button", class: action === "drain" ? "" : "quiet",
    "aria-label": `${verb} ${pod.id}`, "data-pod": pod.id }, verb);
  button.addEventListener("click", () => act(pod, action, button));
  return [button];
}

// The State cell: the badge, and for a drained pod how far the drain has got.
function stateCell(pod) {
  const cell = h("td", {}, statusBadge(pod.state));
  if (pod.state === "DRAINING") {
    const left = owned(pod);
    cell.append(h("span", { class: "detail" }, left
      ? `${sessions(left)} still to move off`
      : "runs no session: safe to stop"));
  }
  return cell;
}

function sessionsCell(pod, names) {
  if (!pod.sessions.length) return "none";
  return h("ul", { class: "plain" }, pod.sessions.map((s) => {
    const [adapterId, index] = s.slot.split("/");
    const name = names.get(adapterId);
    const label = name ? `${name}${index && index !== "0" ? ` #${index}` : ""}` : s.slot;
    // An owned session shows its lease status (ACTIVE, CLAIMING, HANDING_OFF...).
    const role = s.role === "ACTIVE" ? statusBadge(s.status) : s.role;
    return h("li", {}, name ? link(label, "adapters", adapterId) : label, " ", role,
      s.epoch ? ` epoch ${s.epoch}` : "");
  }));
}

function rebalanceBar(act) {
  const button = h("button", { type: "button" }, "Rebalance");
  button.addEventListener("click", () => act(button));
  return h("div", { class: "toolbar" }, h("div", { class: "actions", role: "group",
    "aria-label": "Placement" }, button), h("p", { class: "hint" },
  "Drain moves a pod's sessions to other pods by handoff while it keeps running; " +
    "Rebalance spreads the sessions evenly again now."));
}

export function podsPage(app) {
  const canAct = session.can("operator");
  const message = messageLine();
  const columns = ["Pod", "State", "Sessions", "Last heartbeat", "Address", "Connectors",
    "Capacity", "Labels"];
  const holder = h("div", { class: "scroll" });
  const count = h("p", { class: "count" });

  let refocus; // the pod whose button was used: it keeps the keyboard focus

  async function setDrain(pod, action, button) {
    refocus = pod.id;
    button.disabled = true;
    try {
      const answer = await post(`/api/v1/pods/${enc(pod.id)}/${action}`);
      message.info(action === "drain"
        ? `Drain of ${answer.id} requested: ${sessions(owned(answer))} to move to other ` +
          "pods by handoff; the pod keeps running."
        : `Undrained ${answer.id}: new sessions may be placed on it again (Rebalance moves ` +
          "some back now).");
    } catch (error) {
      const verb = action === "drain" ? "Drain" : "Undrain";
      message.error(`${verb} of ${pod.id} failed, nothing changed: ${error.message}`);
      button.disabled = false;
    }
    await app.refresh();
  }

  async function rebalance(button) {
    button.disabled = true;
    try {
      const answer = await post("/api/v1/cluster/rebalance");
      message.info(`Rebalance requested: sessions move by handoff within ` +
        `${answer.window_seconds} s (placement.rebalance is ${answer.policy}).`);
    } catch (error) {
      message.error(`Rebalance failed, nothing changed: ${error.message}`);
    } finally {
      button.disabled = false;
      button.focus(); // disabling it took the focus away
    }
    await app.refresh();
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
    const perPod = pods.map((pod) => podActions(pod, (role) => session.can(role), setDrain));
    const withActions = perPod.some((buttons) => buttons.length);
    const { table: tableEl, body } = table("Pods", withActions ? [...columns, "Actions"] : columns,
      { hiddenCaption: true });
    pods.forEach((pod, i) => {
      const labels = Object.entries(pod.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      const heartbeat = h("td");
      setText(heartbeat, pod.last_heartbeat ? time(pod.last_heartbeat) : "known to the leader only");
      body.append(h("tr", {}, h("td", {}, pod.id), stateCell(pod),
        h("td", {}, sessionsCell(pod, names)), heartbeat, h("td", {}, pod.address || "—"),
        h("td", {}, pod.connectors.join(", ") || "—"), h("td", {}, String(pod.capacity)),
        h("td", {}, labels || "—"), withActions ? h("td", {}, perPod[i]) : null));
    });
    // The table is rebuilt: keep the keyboard on the same pod's button (Drain becomes Undrain).
    const focused = holder.contains(document.activeElement) ? document.activeElement.dataset.pod
      : refocus;
    refocus = undefined;
    holder.replaceChildren(tableEl);
    if (focused !== undefined) {
      const again = [...tableEl.querySelectorAll("button")].find((b) => b.dataset.pod === focused);
      if (again) again.focus();
    }
    count.textContent = `${pods.length} registered pods`;
  }

  return { title: "Pods", node: h("section", { class: "page" }, h("h1", {}, "Pods"),
    canAct ? rebalanceBar(rebalance) : null, message.el, count, holder), refresh };
}
