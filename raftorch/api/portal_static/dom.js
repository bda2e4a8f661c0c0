// Building the page from data without ever parsing data as markup: every string that
// reaches the document goes through textContent, a text node or an attribute value.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function setText(el, value) {
  const text = value === null || value === undefined || value === "" ? "—" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

let unique = 0;
export const uid = (prefix) => `${prefix}-${++unique}`;

// An internal link; `path` parts are encoded, so an id can never leave the Portal.
export function link(text, ...parts) {
  return h("a", { href: "#/" + parts.map(encodeURIComponent).join("/") }, text);
}

export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

export function statusBadge(status) {
  return h("span", { class: `badge badge-${String(status).toLowerCase()}` }, String(status));
}

// A table with a caption and column headers; answers {table, body}.
export function table(caption, headers, { hiddenCaption = false } = {}) {
  const body = h("tbody");
  const head = h("tr", {}, headers.map((header) => h("th", { scope: "col" }, header)));
  const tableEl = h("table", {},
    h("caption", { class: hiddenCaption ? "visually-hidden" : "" }, caption),
    h("thead", {}, head), body);
  return { table: tableEl, body };
}

// A term and its value (<dt>/<dd>): read as a pair by screen readers.
export function field(label, value) {
  const dd = h("dd");
  setText(dd, value);
  return { item: h("div", { class: "field" }, h("dt", {}, label), dd), value: dd };
}

// A labelled form control with its own inline error line.
export function control(label, input, { hint } = {}) {
  const id = input.id || uid("input");
  input.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [error.id];
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: `${id}-hint` }, hint);
    described.push(hintEl.id);
  }
  input.setAttribute("aria-describedby", described.join(" "));
  const wrap = h("div", { class: "control" }, h("label", { for: id }, label), input, hintEl, error);
  return {
    wrap,
    input,
    fail(message) {
      error.textContent = message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
    },
    clear() {
      error.textContent = "";
      error.hidden = true;
      input.removeAttribute("aria-invalid");
    },
  };
}

// A line for outcomes: "status" (polite) for results, "alert" for failures.
export function messageLine() {
  const el = h("p", { class: "message", role: "status" });
  return {
    el,
    info(text) {
      el.setAttribute("role", "status");
      el.className = "message";
      el.textContent = text;
    },
    error(text) {
      el.setAttribute("role", "alert");
      el.className = "message message-error";
      el.textContent = text;
    },
    clear() { el.textContent = ""; },
  };
}

export function select(options, value) {
  const el = h("select", {}, options.map(([optionValue, label]) =>
    h("option", { value: optionValue }, label)));
  if (value !== undefined) el.value = value;
  return el;
}
