// The DICOM page's purges: the studies forgotten at the node (GET /ui/api/purges, relayed),
// each with what it stopped and deleted, where the study's results went before it (the node
// cannot take those back: a person removes them there) and its block (instances of the study
// sent again dropped, until released); "Purge a study" (admin; the node checks too) asks once
// more, then POST /ui/api/purges; "Release…" (admin) ends a block, once the user says why and
// confirms, with POST /ui/api/purges/{id}/release. The study is never shown back: the answer
// names none, and the form is emptied once the node has it.
import { age, api, el, focusPlace, restoreFocus, tableBody } from "./common.js";
import { confirmedForm } from "./confirm.js";

const COLUMNS = ["Asked", "Reason", "By", "State", "Series", "Results stopped", "Deleted", "Delivered before: remove there", "Block", ""];
let admin = false; // set by purgeForm, which the page calls for an admin key only
let releasing = null; // the purge the release form is open for (the form outlives a redraw)

// Outcomes the training service may hold are retracted there first, then deleted.
function deleted(p) {
  const retracting = p.outcomes_retracting ? `; ${p.outcomes_retracting} outcomes retracted at the training service` : "";
  return `${p.instances_deleted} instance files, ${p.results_deleted} results, ${p.outcomes_deleted} outcomes, ${p.exam_reports_deleted} exam reports; ${p.orders_forgotten} orders and ${p.retrievals_forgotten} retrievals forgotten${retracting}`;
}

function delivered(p) {
  if (p.state !== "done") return el("span", { class: "muted", text: "applied within a moment" });
  if (!p.delivered.length) return "none";
  const went = (d) => el("li", { "data-testid": "purge-delivered" }, el("span", { class: "status failed", text: String(d.results) }), ` at ${d.destination}, last ${age(d.last_at)}`);
  return el("ul", { class: "plain" }, p.delivered.map(went));
}

// Blocked (with the instances dropped since), released (when, by whom, why), or none.
function block(p) {
  const dropped = p.dropped_after;
  const since = dropped.count ? `${dropped.count} instances sent again dropped, the last ${age(dropped.last_at)}` : "nothing sent again yet";
  if (p.blocked) return [el("span", { class: "status", text: "blocked" }), el("div", { class: "muted", text: since })];
  if (p.released_at) return [el("span", { class: "status", text: "released" }), el("div", { class: "muted", text: `${age(p.released_at)} by ${p.released_by}: ${p.released_reason}` })];
  return el("span", { class: "muted", text: "none: sent again, it comes in" });
}

function releaseButton(p) {
  if (!admin || !p.blocked) return null;
  const button = el("button", { type: "button", "data-testid": "purge-release", text: "Release…", "aria-label": `Release the block of purge ${p.id}` });
  button.addEventListener("click", () => openRelease(p));
  return button;
}

function purgeRow(p) {
  return el(
    "tr",
    { "data-testid": "purge-row", "data-id": String(p.id), "data-state": p.state, "data-blocked": String(p.blocked) },
    el("td", { text: age(p.created_at) }),
    el("th", { scope: "row", text: p.reason }),
    el("td", { text: p.requested_by }),
    el("td", {}, el("span", { class: "status", text: p.state })),
    el("td", { "data-testid": "purge-series", text: `${p.series} (${p.series_stopped} before classification)` }),
    el("td", { "data-testid": "purge-stopped", text: String(p.deliveries_stopped) }),
    el("td", { "data-testid": "purge-deleted", text: p.state === "done" ? deleted(p) : "–" }),
    el("td", { "data-testid": "purge-sent" }, delivered(p)),
    el("td", { "data-testid": "purge-block" }, block(p)),
    el("td", {}, releaseButton(p)),
  );
}

// The purges, newest first; a row's control that had the focus keeps it over the redraw.
export async function loadPurges() {
  const page = await api("/ui/api/purges?limit=50");
  const root = document.getElementById("purges");
  if (!page.items.length) return root.replaceChildren(el("p", { class: "muted", text: "No study has been purged at the node." }));
  const place = focusPlace("[data-testid=purge-row]");
  tableBody(root, COLUMNS, "Purges at the node, newest first", false).append(...page.items.map(purgeRow));
  restoreFocus(place);
}

// Release a block: the form says what it lets in again and asks why, the confirm step asks
// once more, then the node ends the block (every purge of the study that blocks it).
function openRelease(p) {
  releasing = p;
  document.getElementById("release-what").textContent = `Purge ${p.id} (${p.reason}, by ${p.requested_by}) blocks its study: ${p.dropped_after.count} instances sent again were dropped.`;
  document.getElementById("release-error").hidden = true;
  document.getElementById("release-said").textContent = "";
  const form = document.getElementById("release-form");
  form.hidden = false;
  form.elements.reason.focus();
}

function releaseForm() {
  const form = document.getElementById("release-form");
  const close = () => {
    form.hidden = true;
    form.reset();
    document.getElementById("release-confirm").hidden = true;
    releasing = null;
  };
  document.getElementById("release-close").addEventListener("click", () => {
    const id = releasing?.id;
    close();
    document.querySelector(`[data-testid=purge-row][data-id="${id}"] [data-testid=purge-release]`)?.focus();
  });
  confirmedForm("release", document.getElementById("release-said"), {
    ask: (data) => [
      { id: releasing.id, reason: data.get("reason").trim() },
      `Release the block of purge ${releasing.id}? Instances of its study sent again (by a PACS, a retrieval or an order) come in and are classified and delivered as a new arrival. What the purge deleted stays deleted.`,
    ],
    send: async ({ id, reason }) => {
      const p = await api(`/ui/api/purges/${id}/release`, { method: "POST", json: { reason } });
      return `Purge ${p.id}: its block is released; its study comes in again.`;
    },
    then: async () => {
      close();
      await loadPurges();
    },
  });
}

// Purge a study: the form asks once more (nothing of the study is kept, nothing more goes),
// then the node records it (202) and its worker applies it within a moment.
export function purgeForm() {
  admin = true;
  releaseForm();
  const form = confirmedForm("purge", document.getElementById("purge-said"), {
    ask: (data) => {
      const body = { study_instance_uid: data.get("study_instance_uid").trim(), reason: data.get("reason").trim(), block: data.get("block") === "on" };
      const after = body.block
        ? "Instances of it sent again are dropped, and it is not fetched, until the purge is released."
        : "Not blocked: instances of it sent again come in as a new arrival.";
      return [
        body,
        `Purge this study at the node? Its results not yet sent are never sent, and the node deletes its scans, results, outcomes and the orders that name it. ${after} Results it already delivered stay where they went: the purge lists those destinations, for you to remove them there. This cannot be undone.`,
      ];
    },
    send: async (body) => `Purge ${(await api("/ui/api/purges", { method: "POST", json: body })).id} recorded; the node applies it within a moment.`,
    then: loadPurges,
  });
  form.hidden = false;
}
