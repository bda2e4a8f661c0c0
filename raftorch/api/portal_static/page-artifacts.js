// Artifacts: every name with its versions and the adapters that use it; admins upload
// new versions and delete artifacts no adapter uses.

import { api, del, enc, get, getAll, session } from "./api.js";
import { control, h, link, messageLine, table, time } from "./dom.js";

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// The upload form: the file is the raw body, its media type the Content-Type.
function uploadForm(app, message) {
  const name = control("Name", h("input", { type: "text", autocomplete: "off" }),
    { hint: "Uploading an existing name adds its next version." });
  const file = control("File", h("input", { type: "file" }));
  const mediaType = control("Media type", h("input", { type: "text", autocomplete: "off",
    placeholder: "from the file" }), { hint: "Optional, e.g. text/xml." });
  const upload = h("button", { type: "submit" }, "Upload");

  async function submit(event) {
    event.preventDefault();
    for (const c of [name, file, mediaType]) c.clear();
    const chosen = file.input.files[0];
    const artifact = name.input.value.trim();
    if (!artifact) name.fail("Name the artifact.");
    if (!chosen) file.fail("Choose a file.");
    if (!artifact || !chosen) return;
    upload.disabled = true;
    try {
      const info = await api("POST", `/api/v1/artifacts/${enc(artifact)}`, {
        raw: chosen, contentType: mediaType.input.value.trim() || chosen.type || undefined });
      message.info(`Uploaded ${info.name} version ${info.version} (${size(info.size)}).`);
      name.input.value = "";
      file.input.value = "";
    } catch (error) {
      (/name/i.test(error.message) ? name : file).fail(error.message);
      message.error(`Not uploaded: ${error.message}`);
    } finally {
      upload.disabled = false;
    }
    await app.refresh();
  }

  return h("form", { class: "editor inline", novalidate: true, onsubmit: submit,
    "aria-label": "Upload an artifact" }, h("h2", {}, "Upload"), name.wrap, file.wrap,
  mediaType.wrap, h("div", { class: "actions" }, upload));
}

function artifactRow(artifact, versions, users, onDelete) {
  const list = h("ul", { class: "plain" }, versions.slice().reverse().map((v) => h("li", {},
    `v${v.version} · ${size(v.size)} · ${v.media_type} · ${time(v.created_at)} · `,
    h("code", { title: v.sha256 }, v.sha256.slice(0, 12)))));
  const used = users.length ? h("ul", { class: "plain" },
    users.map((a) => h("li", {}, link(a.name, "adapters", a.id)))) : "unused";
  const cells = [h("td", {}, artifact), h("td", {}, list), h("td", {}, used)];
  if (onDelete) {
    cells.push(h("td", {}, h("button", { type: "button", class: "danger",
      "aria-label": `Delete ${artifact}`, disabled: users.length > 0,
      title: users.length ? "In use: remove it from these adapters first" : "",
      onclick: () => onDelete(artifact) }, "Delete")));
  }
  return h("tr", {}, cells);
}

export function artifactsPage(app) {
  const isAdmin = session.can("admin");
  const message = messageLine();
  const holder = h("div", { class: "scroll" });

  async function remove(artifact) {
    try {
      await del(`/api/v1/artifacts/${enc(artifact)}`);
      message.info(`Deleted ${artifact} (every version).`);
    } catch (error) {
      message.error(`Delete failed, nothing changed: ${error.message}`);
    }
    await app.refresh();
  }

  async function refresh() {
    let versions;
    let adapters;
    try {
      [versions, adapters] = await Promise.all([get("/api/v1/artifacts").then((r) => r.items),
        getAll("/api/v1/adapters?configs=false").then((r) => r.items)]);
    } catch (error) {
      message.error(`Cannot load artifacts: ${error.message}`);
      return;
    }
    const byName = new Map();
    for (const v of versions) byName.set(v.name, [...(byName.get(v.name) || []), v]);
    const headers = ["Name", "Versions", "Used by", ...(isAdmin ? ["Actions"] : [])];
    const { table: tableEl, body } = table("Artifacts", headers, { hiddenCaption: true });
    for (const [artifact, all] of byName) {
      const users = adapters.filter((a) => (a.artifacts || []).includes(artifact));
      body.append(artifactRow(artifact, all, users, isAdmin ? remove : null));
    }
    holder.replaceChildren(byName.size ? tableEl : h("p", { class: "empty" }, "No artifacts yet."));
  }

  return { title: "Artifacts", node: h("section", { class: "page" }, h("h1", {}, "Artifacts"),
    message.el, holder, isAdmin ? uploadForm(app, message) : null), refresh };
}
