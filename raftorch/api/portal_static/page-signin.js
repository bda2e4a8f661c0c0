// Sign in with an API token: the token is checked against GET /api/v1/whoami.

import { ApiError, get, session } from "./api.js";
import { control, h, messageLine } from "./dom.js";

export function signInPage(app) {
  const token = control("Token", h("input", {
    type: "password", autocomplete: "off", spellcheck: "false", required: true,
  }), { hint: "An API token: the bootstrap admin token, or one an admin made (Tokens page or raftorch tokens create)." });
  const message = messageLine();
  const button = h("button", { type: "submit" }, "Sign in");
  const flash = app.takeFlash();
  if (flash) message.info(flash);

  async function submit(event) {
    event.preventDefault();
    token.clear();
    const value = token.input.value.trim();
    if (!value) {
      token.fail("Enter a token.");
      return;
    }
    button.disabled = true;
    try {
      const whoami = await get("/api/v1/whoami", { token: value });
      session.signIn(value, whoami);
      app.signedIn();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        token.fail(`This token was not accepted: ${error.message}.`);
        message.error("Sign-in failed: the token is wrong, revoked or not known to this cluster.");
      } else {
        message.error(`Cannot sign in right now: ${error.message}`);
      }
    } finally {
      button.disabled = false;
    }
  }

  const form = h("form", { class: "signin", onsubmit: submit, novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "The Portal of this raftorch cluster. Every replica serves it."),
    token.wrap, button, message.el);
  return { title: "Sign in", node: h("section", {}, form) };
}
