// Model facts: one version in plain terms (what it answers, its data, its figures with their
// intervals, how it does in service, and the caveats the API draws from them), printable.
import { api, chart, el, fmt, setup } from "./common.js";

const head = document.getElementById("facts-model");
const name = head.dataset.model;
const version = head.dataset.version;
const path = `/v1/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`;
const FIGURES = { auc: "AUC", sensitivity: "Sensitivity", specificity: "Specificity", accuracy: "Accuracy" };
const SOURCES = { out_of_fold: "cross-validated (each scan scored by a model that did not train on it)", validation: "the validation split", reported: "reported outcomes" };
const interval = (e) => (e ? `${fmt(e.value, 3)} (95% interval ${fmt(e.low, 3)} to ${fmt(e.high, 3)})` : "–");

function facts(id, rows) {
  document.getElementById(id).replaceChildren(...rows.filter(Boolean).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function classText(card) {
  const codes = card.class_codes || [];
  return card.classes.map((c, i) => (codes[i] ? `${c} (${codes[i].scheme} ${codes[i].value}: ${codes[i].meaning})` : c)).join("; ");
}

function thresholdText(t) {
  if (!t) return "the most probable class";
  const at = `${t.positive_class} when its probability is at least ${fmt(t.value, 3)}`;
  if (t.chosen_on === "prior") return `${at} (not tuned: too few validation scans of a class, so 0.5 corrected for the class balance)`;
  const on = t.chosen_on === "out_of_fold" ? "cross-validated predictions" : "the validation split";
  return `${at} (${t.rule}, chosen on ${on}${t.chosen_on_images ? `, ${t.chosen_on_images} scans` : ""})`;
}

function splitText(d) {
  if (d.split_by === "patient") return `by patient: ${d.patients} patients${d.patients_in_both ? `, ${d.patients_in_both} with scans on both sides` : ", none on both sides"}`;
  if (d.split_by === "scan") return "scan by scan (the data named no patients)";
  return "not recorded (an older card)";
}

// The team's words in force (`…/notes`: as amended since publishing, else the job spec's on
// the card), shown as text; the section stays hidden without them.
function notes(found) {
  const given = found.notes;
  const rows = [];
  if (given.purpose) rows.push(el("dt", { text: "Purpose" }), el("dd", { text: given.purpose }));
  if (given.limitations.length) rows.push(el("dt", { text: "Limitations" }), el("dd", {}, el("ul", {}, ...given.limitations.map((l) => el("li", { text: l })))));
  if (given.contact) rows.push(el("dt", { text: "Contact" }), el("dd", { text: given.contact }));
  document.getElementById("facts-notes").replaceChildren(...rows);
  const amended = document.getElementById("facts-notes-amended");
  amended.textContent = found.source === "amended" ? `Amended ${String(found.changed_at).slice(0, 10)} by ${found.changed_by}.` : "";
  amended.hidden = found.source !== "amended";
  document.getElementById("facts-notes-box").hidden = rows.length === 0;
}

function profileText(profile) {
  if (!profile) return "none: its answers do not say whether a scan is unlike the training scans";
  const share = (x) => `${fmt(100 * x, 1)}%`;
  const val = profile.flagged_val === null || profile.flagged_val === undefined ? "" : ` and ${share(profile.flagged_val)} of validation scans`;
  return `each answer says whether its scan is unlike the ${profile.images} training scans; flags ${share(profile.flagged_train)} of them${val}`;
}

function countsText(counts) {
  return Object.entries(counts || {}).map(([split, per]) => `${split}: ${Object.entries(per).map(([c, n]) => `${n} ${c}`).join(", ")}`).join("; ") || "–";
}

function figures(card) {
  const box = document.getElementById("facts-figures");
  const estimates = card.estimates || {};
  const names = Object.keys(FIGURES).filter((k) => estimates[k]);
  if (!names.length) return box.replaceChildren(el("p", { class: "muted", text: "No intervals on this card (written before they were recorded): its validation metrics only." }));
  const first = estimates[names[0]];
  box.replaceChildren(
    el("table", { class: "grid", "data-testid": "facts-estimates" },
      el("caption", { text: `On ${first.images} scans of ${SOURCES[first.source] || first.source}` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "figure" }), el("th", { scope: "col", text: "value and 95% interval" }))),
      el("tbody", {}, names.map((k) => el("tr", {}, el("th", { scope: "row", text: FIGURES[k] }), el("td", { text: interval(estimates[k]) }))))),
    el("p", { text: `Sensitivity and specificity at its decision rule. Its probabilities are calibrated (temperature ${fmt(card.calibration.temperature, 2)}; expected calibration error ${fmt(card.metrics.val_ece_calibrated, 3)}).` }),
  );
}

function inService(f) {
  const box = document.getElementById("facts-service");
  if (!f) return box.replaceChildren(el("p", { class: "muted", text: "The key may not read the outcomes reported for this version." }));
  if (!f.reports) return box.replaceChildren(el("p", { text: "No confirmed diagnosis has been reported for its answers yet." }));
  const rows = Object.keys(FIGURES).filter((k) => f[k]).map((k) => el("tr", {}, el("th", { scope: "row", text: FIGURES[k] }), el("td", { text: interval(f[k]) }), el("td", { text: f.below_validation.includes(k) ? "below the card's" : "" })));
  box.replaceChildren(
    el("p", { text: `${f.reports} reported outcomes (from ${f.reported_by}), ${f.clients} client${f.clients === 1 ? "" : "s"}, last ${String(f.last_reported_at || "").slice(0, 10)}.` }),
    el("table", { class: "grid" }, el("caption", { text: "On confirmed diagnoses in service" }), el("tbody", {}, rows)),
  );
}

const TREND = [["accuracy", "#1f5fa8"], ["sensitivity", "#b5540b"], ["specificity", "#2b7a2b"]];
const share = (e) => (e ? `${fmt(e.value, 3)} (${fmt(e.low, 3)} to ${fmt(e.high, 3)})` : "–");

// A dashed horizontal line at each of the card's figures, in its series' colour.
function cardLines(validation) {
  const drawn = TREND.filter(([k]) => validation[k]);
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.setLineDash([6, 4]);
          for (const [k, colour] of drawn) {
            const y = u.valToPos(validation[k].value, "y", true);
            ctx.strokeStyle = colour;
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, y);
            ctx.lineTo(u.bbox.left + u.bbox.width, y);
            ctx.stroke();
          }
          ctx.restore();
        },
      ],
    },
  };
}

// The version's outcomes period by period: a chart, and the same figures as a table (what a
// screen reader and the printed page read).
async function trend(bucket) {
  const t = await api(`${path}/outcomes/trend?bucket=${bucket}`).catch(() => null);
  const box = document.getElementById("trend");
  const plot = document.getElementById("trend-chart");
  if (!t || !t.periods.length) {
    plot.replaceChildren();
    plot.hidden = true;
    return box.replaceChildren(el("p", { class: "muted", text: t ? `No outcome reported since ${t.since.slice(0, 10)}.` : "The key may not read the outcomes reported for this version." }));
  }
  const names = TREND.filter(([k]) => t.periods.some((p) => p[k]));
  plot.hidden = false;
  const x = t.periods.map((p) => Date.parse(p.start) / 1000);
  chart(
    plot,
    {
      scales: { x: { range: [Date.parse(t.since) / 1000, Date.now() / 1000] }, y: { range: [0, 1] } },
      axes: [{ label: `${bucket} starting` }, { label: "share" }],
      series: [{ label: bucket }, ...names.map(([k, colour]) => ({ label: k, stroke: colour, width: 2, points: { show: true } }))],
      plugins: [cardLines(t.validation)],
    },
    [x, ...names.map(([k]) => t.periods.map((p) => (p[k] ? p[k].value : null)))],
  );
  box.replaceChildren(
    el("table", { class: "grid" },
      el("caption", { text: `Reported by ${t.reported_by}, by ${bucket}, since ${t.since.slice(0, 10)}` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: `${bucket} of` }), el("th", { scope: "col", text: "reports" }), ...names.map(([k]) => el("th", { scope: "col", text: FIGURES[k] })), el("th", { scope: "col", text: "below the card's" }))),
      el("tbody", {}, t.periods.map((p) => el("tr", { "data-testid": "trend-row", "data-below": p.below_validation.join(" ") },
        el("th", { scope: "row", text: p.start.slice(0, 10) + (p.partial ? " (part)" : "") }), el("td", { text: String(p.reports) }), ...names.map(([k]) => el("td", { text: share(p[k]) })), el("td", { text: p.below_validation.join(", ") || "–" }))))),
  );
}

// Each client's figures, for the version's owner and admin keys (another key gets a 403).
async function byClient() {
  const f = await api(`${path}/outcomes/clients`).catch(() => null);
  const box = document.getElementById("by-client-box");
  box.hidden = !f || !f.clients.length;
  if (box.hidden) return;
  const names = TREND.filter(([k]) => f.clients.some((c) => c[k]));
  document.getElementById("by-client").replaceChildren(
    el("table", { class: "grid" },
      el("caption", { text: "Each client's reports, most first" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "client" }), el("th", { scope: "col", text: "reports" }), ...names.map(([k]) => el("th", { scope: "col", text: FIGURES[k] })), el("th", { scope: "col", text: "below the card's" }))),
      el("tbody", {}, f.clients.map((c) => el("tr", { "data-testid": "client-row" },
        el("th", { scope: "row", text: c.client }), el("td", { text: String(c.reports) }), ...names.map(([k]) => el("td", { text: share(c[k]) })), el("td", { text: c.below_validation.join(", ") || "–" }))))),
  );
}

setup(async () => {
  document.getElementById("print").addEventListener("click", () => window.print());
  const [detail, reported, kept, said] = await Promise.all([api(path), api(`${path}/outcomes`).catch(() => null), api(`${path}/caveats`), api(`${path}/notes`)]);
  const card = detail.card;
  const status = document.getElementById("facts-status");
  status.textContent = detail.withdrawn ? `Withdrawn: ${detail.withdrawn.reason}` : `In the registry${detail.aliases.length ? `, serving as ${detail.aliases.join(", ")}` : ", no alias names it"}.`;
  facts("facts-what", [
    ["Classes", classText(card)],
    ["Decision", thresholdText(card.threshold)],
    ["Scans", card.intended_use && card.intended_use.modality ? [card.intended_use.modality, card.intended_use.body_part, card.intended_use.view].filter(Boolean).join(" ") : "any (none recorded)"],
    ["Input", `${card.input.size} px, ${card.input.channels === 1 ? "grey" : "colour"}`],
    ["Network", `${card.base_model}, fine-tuned from ImageNet weights`],
    ["Published", `${String(card.created_at).slice(0, 10)}${card.access ? ` by ${card.access.owner}` : ""}`],
  ]);
  notes(said);
  facts("facts-data", [
    ["Scans", countsText(card.dataset.class_counts)],
    ["Split", splitText(card.dataset)],
    ["Trained", `${card.training.epochs_run} epochs on ${card.training.device}, ${Math.round(card.training.seconds)} s`],
    ["Input check", profileText(card.input_profile)],
  ]);
  figures(card);
  inService(reported);
  document.getElementById("facts-caveats").replaceChildren(...kept.caveats.map((c) => el("li", { "data-code": c.code, text: c.text })));
  const bucket = document.getElementById("trend-bucket");
  bucket.addEventListener("change", () => trend(bucket.value));
  await Promise.all([trend(bucket.value), byClient()]); // neither waits on the other
});
