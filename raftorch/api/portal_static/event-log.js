// An adapter's event log: newest first, filterable by level and category.

import { h, select, table, time } from "./dom.js";

const LEVELS = ["info", "warning", "error"];
const CATEGORIES = ["connection", "action", "system"];

function details(data) {
  return Object.entries(data || {}).filter(([key]) => key !== "slot")
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join("  ");
}

export function eventLog() {
  const events = table("Event log", ["Time", "Level", "Category", "Description", "Details"],
    { hiddenCaption: true });
  const level = select([["", "Any"], ...LEVELS.map((l) => [l, l])]);
  const category = select([["", "Any"], ...CATEGORIES.map((c) => [c, c])]);
  level.id = "event-level";
  category.id = "event-category";
  const count = h("p", { class: "count" });
  let items = [];

  function render(latest = items) {
    items = latest;
    const shown = items.filter((e) => (!level.value || e.level === level.value) &&
      (!category.value || e.category === category.value));
    events.body.replaceChildren(...shown.map((e) => h("tr", { class: `level-${e.level}` },
      h("td", { class: "nowrap" }, time(e.time)), h("td", {}, e.level), h("td", {}, e.category),
      h("td", {}, e.description), h("td", { class: "details" }, details(e.details)))));
    count.textContent = `${shown.length} of ${items.length} latest events shown, newest first`;
  }

  level.addEventListener("change", () => render());
  category.addEventListener("change", () => render());
  const node = h("div", {},
    h("div", { class: "filters" }, h("label", { for: "event-level" }, "Level"), level,
      h("label", { for: "event-category" }, "Category"), category),
    count, h("div", { class: "scroll" }, events.table));
  return { node, render };
}
