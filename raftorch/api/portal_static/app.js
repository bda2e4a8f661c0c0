// The Portal's shell: sign-in gate, navigation, hash routes, live refresh of the open page.

import { session, whenUnauthorized } from "./api.js";
import { h } from "./dom.js";
import { ChangeWatcher } from "./live.js";
import { adapterPage } from "./page-adapter.js";
import { adaptersPage } from "./page-adapters.js";
import { artifactsPage } from "./page-artifacts.js";
import { clusterPage } from "./page-cluster.js";
import { newAdapterPage } from "./page-new-adapter.js";
import { podsPage } from "./page-pods.js";
import { signInPage } from "./page-signin.js";
import { tokensPage } from "./page-tokens.js";

const ROUTES = [
  { path: /^\/adapters\/new$/, page: newAdapterPage, section: "adapters" },
  { path: /^\/adapters\/([^/]+)$/, page: adapterPage, section: "adapters" },
  { path: /^\/adapters$/, page: adaptersPage, section: "adapters" },
  { path: /^\/pods$/, page: podsPage, section: "pods" },
  { path: /^\/cluster$/, page: clusterPage, section: "cluster" },
  { path: /^\/artifacts$/, page: artifactsPage, section: "artifacts" },
  { path: /^\/tokens$/, page: tokensPage, section: "tokens", role: "admin" },
];
const SECTIONS = [
  ["adapters", "Adapters"], ["pods", "Pods"], ["cluster", "Cluster"],
  ["artifacts", "Artifacts"], ["tokens", "Tokens", "admin"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("live");
const who = document.getElementById("who");

let current = null;
let refreshing = null;
let again = false;
let flashed = "";

export const app = {
  go(path, message = "") {
    flashed = message;
    if (location.hash === `#${path}`) render();
    else location.hash = path;
  },
  takeFlash() {
    const message = flashed;
    flashed = "";
    return message;
  },
  // Refresh the open page now; calls that come while one runs are folded into one more.
  async refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        const page = current;
        try {
          if (page && page.refresh) await page.refresh();
        } catch (error) {
          console.error("refresh failed", error);
        }
      } while (again);
    })();
    try { await refreshing; } finally { refreshing = null; }
  },
  signedIn() {
    watcher.start();
    render();
  },
  signOut(message = "") {
    session.signOut();
    watcher.stop();
    watcher.revision = null;
    flashed = message;
    render();
  },
};

const watcher = new ChangeWatcher(() => app.refresh(), (ok, why) => {
  live.textContent = ok ? "Live" : `Reconnecting: ${why}`;
  live.className = ok ? "live" : "live live-down";
});

whenUnauthorized(() => app.signOut("Your token is no longer accepted (revoked?). Sign in again."));

function renderChrome(section) {
  const signedIn = Boolean(session.token);
  nav.replaceChildren(...(signedIn ? SECTIONS : [])
    .filter(([, , role]) => !role || session.can(role))
    .map(([key, label]) => h("a", {
      href: `#/${key}`, "aria-current": key === section ? "page" : false,
    }, label)));
  who.replaceChildren();
  if (signedIn) {
    who.append(h("span", {}, `${session.name} (${session.role})`),
      h("button", { type: "button", class: "quiet", onclick: () => app.signOut() }, "Sign out"));
  } else {
    live.textContent = "";
  }
}

function route() {
  const path = location.hash.replace(/^#/, "") || "/adapters";
  for (const candidate of ROUTES) {
    const match = candidate.path.exec(path);
    if (match) return { ...candidate, params: match.slice(1).map(decodeURIComponent) };
  }
  return null;
}

function mount(page, section) {
  if (current && current.dispose) current.dispose();
  current = page;
  renderChrome(section);
  document.title = `${page.title} — raftorch Portal`;
  main.replaceChildren(page.node);
  main.focus({ preventScroll: true });
  app.refresh();
}

function render() {
  if (!session.token) {
    mount(signInPage(app), null);
    return;
  }
  const found = route();
  if (!found) {
    mount({ title: "Not found", node: h("section", {}, h("h1", {}, "Not found"),
      h("p", {}, "The Portal has no such page. "), h("a", { href: "#/adapters" }, "Adapters")) },
    null);
    return;
  }
  if (found.role && !session.can(found.role)) {
    mount({ title: "Not allowed", node: h("section", {}, h("h1", {}, "Not allowed"),
      h("p", {}, `This page needs the ${found.role} role; you are signed in as ${session.role}.`)) },
    found.section);
    return;
  }
  mount(found.page(app, ...found.params), found.section);
}

window.addEventListener("hashchange", render);
if (session.token) watcher.start();
render();
