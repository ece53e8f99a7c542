// The DICOM page's purges: the studies forgotten at the node (GET /ui/api/purges, relayed),
// each with what it stopped and deleted and where the study's results went before it (the
// node cannot take those back: a person removes them there); "Purge a study" (admin; the
// node checks too) asks once more, then POST /ui/api/purges. The study is never shown back:
// the answer names none, and the form is emptied once the node has it.
import { age, api, el, tableBody } from "./common.js";
import { confirmedForm } from "./confirm.js";

const COLUMNS = ["Asked", "Reason", "By", "State", "Series", "Results stopped", "Deleted", "Delivered before: remove there"];

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

function purgeRow(p) {
  return el(
    "tr",
    { "data-testid": "purge-row", "data-id": String(p.id), "data-state": p.state },
    el("td", { text: age(p.created_at) }),
    el("th", { scope: "row", text: p.reason }),
    el("td", { text: p.requested_by }),
    el("td", {}, el("span", { class: "status", text: p.state })),
    el("td", { "data-testid": "purge-series", text: `${p.series} (${p.series_stopped} before classification)` }),
    el("td", { "data-testid": "purge-stopped", text: String(p.deliveries_stopped) }),
    el("td", { "data-testid": "purge-deleted", text: p.state === "done" ? deleted(p) : "–" }),
    el("td", { "data-testid": "purge-sent" }, delivered(p)),
  );
}

// The purges, newest first.
export async function loadPurges() {
  const page = await api("/ui/api/purges?limit=50");
  const root = document.getElementById("purges");
  if (!page.items.length) return root.replaceChildren(el("p", { class: "muted", text: "No study has been purged at the node." }));
  tableBody(root, COLUMNS, "Purges at the node, newest first", false).append(...page.items.map(purgeRow));
}

// Purge a study: the form asks once more (nothing of the study is kept, nothing more goes),
// then the node records it (202) and its worker applies it within a moment.
export function purgeForm() {
  const form = confirmedForm("purge", document.getElementById("purge-said"), {
    ask: (data) => [
      { study_instance_uid: data.get("study_instance_uid").trim(), reason: data.get("reason").trim() },
      "Purge this study at the node? Its results not yet sent are never sent, and the node deletes its scans, results, outcomes and the orders that name it. Results it already delivered stay where they went: the purge lists those destinations, for you to remove them there. This cannot be undone.",
    ],
    send: async (body) => `Purge ${(await api("/ui/api/purges", { method: "POST", json: body })).id} recorded; the node applies it within a moment.`,
    then: loadPurges,
  });
  form.hidden = false;
}
