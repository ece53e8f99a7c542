// Models: versions with metrics and aliases, two versions side by side (with how each does on
// the outcomes reported for scans it classified), move an alias, change who may use a version.
import { api, el, fmt, notice, setup } from "./common.js";

const SHOWN = ["val_auc", "val_accuracy", "val_accuracy_at_threshold", "val_balanced_accuracy", "val_ece_calibrated"];
const picked = [];

function versionRow(model, v) {
  const box = el("input", { type: "checkbox", id: `pick-${model}-${v.version}`, "data-testid": "compare-pick" });
  box.addEventListener("change", () => pick(model, v, box));
  return el(
    "tr",
    { "data-testid": "version-row", "data-version": String(v.version) },
    el("td", {}, box, el("label", { for: box.id, class: "sr-only", text: `compare version ${v.version}` })),
    el("th", { scope: "row" }, String(v.version), " ", el("a", { href: `/ui/models/${encodeURIComponent(model)}/versions/${v.version}`, "data-testid": "facts-link", text: "facts" }), withdrawnNote(v.withdrawn)),
    el("td", { text: v.created_at.slice(0, 19).replace("T", " ") }),
    el("td", { text: v.base_model }),
    ...SHOWN.map((k) => el("td", { text: fmt(v.metrics[k], 4) })),
    el("td", { "data-testid": "aliases", text: v.aliases.join(", ") || "–" }),
    el("td", { "data-testid": "access", text: accessText(v.access) }),
  );
}

// A withdrawn version (a recall): no service predicts with it; the reason under the badge.
function withdrawnNote(withdrawn) {
  if (!withdrawn) return null;
  return el("div", { "data-testid": "withdrawn" }, el("span", { class: "status failed", text: "withdrawn" }), el("div", { class: "muted", text: withdrawn.reason }));
}

// Who may use a version: every key (shared), or its owner and the clients its card names.
function accessText(access) {
  if (!access || !access.private) return "shared";
  return `private: ${[access.owner, ...access.clients].join(", ")}`;
}

function aliasForm(model, versions) {
  const select = el("select", { id: `alias-version-${model}`, "data-testid": "alias-version" }, ...versions.map((v) => el("option", { value: String(v.version), text: `version ${v.version}` })));
  const alias = el("input", { id: `alias-name-${model}`, value: "production", "data-testid": "alias-name" });
  const form = el(
    "form",
    { class: "inline", "data-testid": "alias-form" },
    el("label", { for: alias.id, text: "Move alias" }), alias,
    el("label", { for: select.id, text: "to" }), select,
    el("button", { type: "submit", text: "Move" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const path = `/v1/models/${encodeURIComponent(model)}/aliases/${encodeURIComponent(alias.value)}`;
    await change(path, { version: Number(select.value) }, (r) => `${model}: ${r.alias} now points to version ${r.version}.`);
  });
  return form;
}

// PUT `json` to `path`, say what came of it and draw the page again; a refusal is the notice.
async function change(path, json, said) {
  try {
    const record = await api(path, { method: "PUT", json });
    notice(said(record));
    await render(canWrite);
  } catch (err) {
    notice(err.message);
  }
}

// Who may use a version, changed by its owner or an admin (the API refuses anyone else).
function accessForm(model, versions) {
  const select = el("select", { id: `access-version-${model}`, "data-testid": "access-version" }, ...versions.map((v) => el("option", { value: String(v.version), text: `version ${v.version}` })));
  const mode = el(
    "select",
    { id: `access-mode-${model}`, "data-testid": "access-mode" },
    el("option", { value: "shared", text: "shared with every key" }),
    el("option", { value: "private", text: "private to its owner and" }),
  );
  const clients = el("input", { id: `access-clients-${model}`, "data-testid": "access-clients", placeholder: "clients, comma-separated", autocomplete: "off", spellcheck: "false" });
  const form = el(
    "form",
    { class: "inline", "data-testid": "access-form" },
    el("label", { for: select.id, text: "Make" }), select,
    el("label", { for: mode.id, class: "sr-only", text: "access" }), mode,
    el("label", { for: clients.id, class: "sr-only", text: "clients who may use it" }), clients,
    el("button", { type: "submit", text: "Set access" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const named = clients.value.split(",").map((c) => c.trim()).filter(Boolean);
    const path = `/v1/models/${encodeURIComponent(model)}/versions/${select.value}/access`;
    await change(path, { private: mode.value === "private", clients: named }, (r) => `${model} version ${r.version}: ${accessText(r)}.`);
  });
  return form;
}

// Withdraw a version (a recall: no service predicts with it), or put it back (an admin's).
function withdrawalForm(model, versions) {
  const select = el("select", { id: `withdraw-version-${model}`, "data-testid": "withdraw-version" }, ...versions.map((v) => el("option", { value: String(v.version), text: `version ${v.version}` })));
  const reason = el("input", { id: `withdraw-reason-${model}`, "data-testid": "withdraw-reason", required: true, maxlength: "500", autocomplete: "off", placeholder: "why (shown to every caller)" });
  const withdraw = el("button", { type: "submit", value: "withdraw", text: "Withdraw" });
  const restore = el("button", { type: "submit", value: "restore", class: "secondary", text: "Put back" });
  const form = el(
    "form",
    { class: "inline", "data-testid": "withdraw-form" },
    el("label", { for: select.id, text: "Recall" }), select,
    el("label", { for: reason.id, class: "sr-only", text: "reason" }), reason,
    withdraw, restore,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const path = `/v1/models/${encodeURIComponent(model)}/versions/${select.value}/withdrawal`;
    const body = { withdrawn: event.submitter !== restore, reason: reason.value };
    await change(path, body, (r) => `${model} version ${r.version}: ${r.withdrawn ? "withdrawn" : "back in service"}.`);
  });
  return form;
}

function pick(model, v, box) {
  const at = picked.findIndex((p) => p.model === model && p.v.version === v.version);
  if (box.checked && at < 0) picked.push({ model, v });
  if (!box.checked && at >= 0) picked.splice(at, 1);
  while (picked.length > 2) picked.shift();
  compare();
}

// How a version does on the outcomes clients reported (GET .../outcomes): null when the key may
// not read them or the API does not answer; the comparison then says so.
async function reported(model, v) {
  try {
    return await api(`/v1/models/${encodeURIComponent(model)}/versions/${v.version}/outcomes`);
  } catch {
    return null;
  }
}

const REPORTED = ["accuracy", "auc", "sensitivity", "specificity"];

// "0.912 (0.871–0.944), below validation" or "–": a reported figure with its 95% interval.
function interval(figures, name) {
  const got = figures && figures[name];
  if (!got) return "–";
  const below = figures.below_validation.includes(name) ? ", below validation" : "";
  return `${fmt(got.value, 3)} (${fmt(got.low, 3)}–${fmt(got.high, 3)})${below}`;
}

function reportedRows(x, y) {
  const count = (f) => (f ? `${f.reports} from ${f.reported_by}` : "–");
  const row = (label, a, b) => el("tr", { "data-testid": "reported" }, el("th", { scope: "row", text: label }), el("td", { text: a }), el("td", { text: b }), el("td", { text: "–" }));
  return [row("reported outcomes", count(x), count(y)), ...REPORTED.map((k) => row(`reported ${k}`, interval(x, k), interval(y, k)))];
}

async function compare() {
  const section = document.getElementById("compare-section");
  section.hidden = picked.length !== 2;
  if (picked.length !== 2) return;
  const [a, b] = picked;
  const keys = [...new Set([...Object.keys(a.v.metrics), ...Object.keys(b.v.metrics)])].sort();
  const rows = keys.map((k) => {
    const x = a.v.metrics[k], y = b.v.metrics[k];
    const diff = typeof x === "number" && typeof y === "number" ? fmt(y - x, 4) : "–";
    return el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: fmt(x) }), el("td", { text: fmt(y) }), el("td", { text: diff }));
  });
  const [x, y] = await Promise.all([reported(a.model, a.v), reported(b.model, b.v)]);
  if (picked[0] !== a || picked[1] !== b) return; // picked again meanwhile
  rows.push(...reportedRows(x, y));
  document.getElementById("compare").replaceChildren(
    el(
      "table",
      { class: "grid" },
      el("caption", { text: `${a.model} v${a.v.version} against ${b.model} v${b.v.version}` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "metric" }), el("th", { scope: "col", text: `v${a.v.version}` }), el("th", { scope: "col", text: `v${b.v.version}` }), el("th", { scope: "col", text: "difference" }))),
      el("tbody", {}, rows),
    ),
  );
}

let canWrite = false;

async function render(write) {
  const models = (await api("/v1/models")).items;
  const sections = await Promise.all(
    models.map(async (m) => {
      const page = await api(`/v1/models/${encodeURIComponent(m.name)}/versions?order=newest&limit=50`);
      const aliases = Object.entries(m.aliases).map(([a, v]) => `${a} → v${v}`).join(", ") || "none";
      const id = `model-${m.name}`;
      return el(
        "section",
        { "aria-labelledby": id, "data-testid": "model", "data-model": m.name },
        el("h2", { id, text: m.name }),
        el("p", { text: `Aliases: ${aliases}` }),
        write ? aliasForm(m.name, page.items) : null,
        write ? accessForm(m.name, page.items) : null,
        write ? withdrawalForm(m.name, page.items) : null,
        el(
          "table",
          { class: "grid" },
          el("caption", { class: "sr-only", text: `Versions of ${m.name}, newest first` }),
          el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Compare" }), el("th", { scope: "col", text: "Version" }), el("th", { scope: "col", text: "Created (UTC)" }), el("th", { scope: "col", text: "Backbone" }), ...SHOWN.map((k) => el("th", { scope: "col", text: k })), el("th", { scope: "col", text: "Aliases" }), el("th", { scope: "col", text: "Access" }))),
          el("tbody", {}, page.items.map((v) => versionRow(m.name, v))),
        ),
      );
    }),
  );
  const root = document.getElementById("models");
  root.replaceChildren(...sections);
  if (!models.length) root.append(el("p", { class: "muted", text: "No model is published yet." }));
}

setup(async (scopes) => {
  canWrite = scopes.has("models:write");
  await render(canWrite);
});
