// Tokens (admin): create one with a role (its secret is shown once), list, revoke.

import { del, enc, get, post } from "./api.js";
import { control, h, messageLine, select, statusBadge, table, time } from "./dom.js";

function createForm(app, message, secret) {
  const name = control("Name", h("input", { type: "text", autocomplete: "off" }),
    { hint: "Who or what uses it, e.g. ops-dashboard." });
  const role = control("Role", select([["viewer", "viewer: reads everything"],
    ["operator", "operator: also enables, disables, resets"],
    ["admin", "admin: everything"]], "viewer"));
  const create = h("button", { type: "submit" }, "Create token");

  function reveal(made) {
    const value = h("input", { type: "text", readOnly: true, value: made.token,
      "aria-label": `Token for ${made.name}`, class: "token-value" });
    secret.replaceChildren(h("p", {}, `Token for ${made.name} (${made.role}). `,
      h("strong", {}, "It is shown only now: store it in your secret manager.")), value);
    secret.hidden = false;
  }

  async function submit(event) {
    event.preventDefault();
    name.clear();
    secret.hidden = true;
    const tokenName = name.input.value.trim();
    if (!tokenName) {
      name.fail("Name the token.");
      return;
    }
    create.disabled = true;
    try {
      const made = await post("/api/v1/tokens", { name: tokenName, role: role.input.value });
      reveal(made);
      name.input.value = "";
      message.info(`Created token ${made.name}.`);
    } catch (error) {
      name.fail(error.message);
      message.error(`Not created: ${error.message}`);
    } finally {
      create.disabled = false;
    }
    await app.refresh();
  }

  return h("form", { class: "editor inline", novalidate: true, onsubmit: submit,
    "aria-label": "Create a token" }, h("h2", {}, "Create"), name.wrap, role.wrap,
  h("div", { class: "actions" }, create));
}

export function tokensPage(app) {
  const message = messageLine();
  const holder = h("div", { class: "scroll" });
  const secret = h("div", { class: "secret", hidden: true });

  async function revoke(token) {
    try {
      await del(`/api/v1/tokens/${enc(token.id)}`);
      message.info(`Revoked ${token.name}: no replica accepts it any more.`);
    } catch (error) {
      message.error(`Revoke failed: ${error.message}`);
    }
    await app.refresh();
  }

  async function refresh() {
    let tokens;
    try {
      tokens = (await get("/api/v1/tokens")).items;
    } catch (error) {
      message.error(`Cannot load tokens: ${error.message}`);
      return;
    }
    const { table: tableEl, body } = table("Tokens",
      ["Name", "Role", "Created", "Last used", "State", "Actions"], { hiddenCaption: true });
    for (const t of tokens) {
      const live = !t.revoked_at;
      body.append(h("tr", {}, h("td", {}, t.name), h("td", {}, t.role),
        h("td", {}, time(t.created_at)), h("td", {}, time(t.last_used_at)),
        h("td", {}, live ? statusBadge("live") : `revoked ${time(t.revoked_at)}`),
        h("td", {}, live ? h("button", { type: "button", class: "danger",
          "aria-label": `Revoke ${t.name}`, onclick: () => revoke(t) }, "Revoke") : "")));
    }
    holder.replaceChildren(tokens.length ? tableEl
      : h("p", { class: "empty" }, "No stored tokens yet (the bootstrap token is in the settings)."));
  }

  return { title: "Tokens", node: h("section", { class: "page" }, h("h1", {}, "Tokens"),
    createForm(app, message, secret), secret, message.el, h("h2", {}, "Tokens"), holder),
  refresh };
}
