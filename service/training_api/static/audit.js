// Audit trail: GET /v1/audit, newest first, filtered by client and action, paged by cursor.
import { api, el, notice, olderButton, setup, tableBody } from "./common.js";

const COLUMNS = ["When (UTC)", "Client", "Action", "Target", "Outcome", "Request", "Detail"];
let cursor = null;

function row(r) {
  const pairs = Object.entries(r.detail || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  const detail = pairs.join(" ") || "–";
  return el(
    "tr",
    { "data-testid": "audit-row", "data-action": r.action },
    el("td", { text: (r.at || "").slice(0, 19).replace("T", " ") }),
    el("td", { text: r.client }),
    el("th", { scope: "row", text: r.action }),
    el("td", { text: r.target }),
    el("td", { text: r.outcome }),
    el("td", { class: "muted", text: r.request_id || "–" }),
    el("td", {}, el("code", { text: detail })),
  );
}

function query(form) {
  const params = new URLSearchParams({ limit: "50" });
  for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
  if (cursor) params.set("cursor", cursor);
  return params;
}

async function load(form, append) {
  if (!append) cursor = null;
  const page = await api(`/v1/audit?${query(form)}`);
  cursor = page.next_cursor;
  const root = document.getElementById("audit");
  const body = tableBody(root, COLUMNS, "Audit records, newest first", append);
  body.append(...page.items.map(row));
  if (!body.children.length) root.replaceChildren(el("p", { class: "muted", text: "No record matches." }));
  document.getElementById("audit-older").hidden = !cursor;
}

setup(async (scopes) => {
  if (!scopes.has("admin")) {
    notice("The audit trail needs a key with the admin scope.");
    return;
  }
  const form = document.getElementById("audit-filter");
  form.hidden = false;
  const rows = () => document.querySelectorAll("#audit tbody tr");
  const run = olderButton(document.getElementById("audit-older"), rows, () => load(form, true));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await run(() => load(form, false));
      notice("");
    } catch (err) {
      notice(err.message);
    }
  });
  await run(() => load(form, false));
});
