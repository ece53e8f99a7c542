// One job: live learning curves, then its version's evaluation, how it does on the outcomes
// reported for it in service, log tail and model card.
import { api, chart, el, every, fmt, markX, notice, setup, statusText } from "./common.js";

const jobId = document.getElementById("job-id").dataset.jobId;
const base = `/v1/training-jobs/${encodeURIComponent(jobId)}`;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
let evaluated = false;

function progressText(job) {
  const pct = `${Math.round(100 * job.progress)}%`;
  if (!job.epoch || !job.epochs) return pct;
  const training = job.status === "running" && job.phase === "training" && job.step && job.steps;
  const step = training ? `, step ${job.step}/${job.steps}` : "";
  return `epoch ${job.epoch}/${job.epochs}${step} (${pct})`;
}

function summary(job) {
  const facts = [
    ["Model", job.model_name],
    ["Client", job.client],
    ["Backbone", job.spec.base_model],
    ["Status", statusText(job)],
    ["Phase", job.status === "running" ? job.phase || "–" : "–"],
    ["Progress", progressText(job)],
    ["Version", job.artifacts ? String(job.artifacts.version) : "–"],
  ];
  if (job.promotion) facts.push(["Promotion", `${job.promotion.passed ? "passed" : "not passed"}: ${job.promotion.reason}`]);
  if (job.error) facts.push(["Error", `${job.error.reason}: ${job.error.detail}`]);
  document.getElementById("job-summary").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-testid": `job-${k.toLowerCase()}`, text: v })]),
  );
}

function curves(metrics) {
  const history = metrics.history;
  const box = document.getElementById("learning-curve");
  box.dataset.points = String(history.length);
  box.dataset.bestEpoch = metrics.best_epoch ?? "";
  const series = (k) => history.map((h) => (typeof h[k] === "number" ? h[k] : null));
  const data = [history.map((h) => h.epoch), series("train_loss"), series("val_loss"), series("val_auc")];
  const best = metrics.best_epoch;
  document.getElementById("curve-note").textContent =
    `Training and validation loss (left axis) and validation AUC (right axis) per epoch` +
    (best ? `; the dashed line marks the best epoch (${best}, by ${metrics.monitor}), the one published.` : ".");
  chart(
    box,
    {
      scales: { x: { time: false }, auc: { range: [0.5, 1] } },
      axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] }, { label: "loss" }, { scale: "auc", side: 1, label: "val AUC", grid: { show: false } }],
      series: [
        { label: "epoch" },
        { label: "train loss", stroke: "#1f5fa8", width: 2, points: { show: true } },
        { label: "val loss", stroke: "#b5540b", width: 2, points: { show: true } },
        { label: "val AUC", stroke: "#2b7a2b", width: 2, scale: "auc", points: { show: true } },
      ],
      plugins: [markX(best, `best epoch ${best}`)],
    },
    data,
  );
}

function confusionTable(ev) {
  const cm = ev.confusion_matrix;
  const total = cm.flat().reduce((a, b) => a + b, 0);
  const head = el("tr", {}, el("th", { scope: "col", text: "true ↓ / predicted →" }), ...ev.classes.map((c) => el("th", { scope: "col", text: c })));
  const rows = cm.map((counts, i) => {
    const sum = counts.reduce((a, b) => a + b, 0);
    return el(
      "tr",
      {},
      el("th", { scope: "row", text: `${ev.classes[i]} (${sum})` }),
      ...counts.map((n, j) =>
        el("td", { class: i === j ? "hit" : "miss", "data-count": String(n) }, el("strong", { text: String(n) }), el("span", { class: "rate", text: ` ${sum ? ((100 * n) / sum).toFixed(1) : "0.0"}%` })),
      ),
    );
  });
  return el(
    "table",
    { class: "grid confusion", "data-total": String(total) },
    el("caption", { text: `Confusion matrix on ${total} validation images, ${ev.decision_text}. Counts, and rates of each true class.` }),
    el("thead", {}, head),
    el("tbody", {}, rows),
  );
}

function evaluation(ev) {
  document.getElementById("evaluation").hidden = false;
  const t = ev.threshold;
  document.getElementById("threshold").textContent = t
    ? `Threshold: predict ${t.positive_class} when P(${t.positive_class}) ≥ ${fmt(t.value, 3)} (${t.rule}) — sensitivity ${fmt(t.sensitivity, 3)}, specificity ${fmt(t.specificity, 3)}; accuracy ${fmt(ev.accuracy, 4)}.`
    : `No decision threshold: ${ev.decision_text}; accuracy ${fmt(ev.accuracy, 4)}.`;
  document.getElementById("confusion-matrix").replaceChildren(confusionTable(ev));
  if (ev.roc.length) {
    const r = ev.roc[0];
    chart(
      document.getElementById("roc"),
      {
        scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
        axes: [{ label: "false positive rate" }, { label: "true positive rate" }],
        series: [{ label: "FPR" }, { label: `${r.class} (AUC ${fmt(r.auc, 3)})`, stroke: "#1f5fa8", width: 2 }],
      },
      [r.fpr, r.tpr],
    );
  }
  if (ev.calibration) {
    const bins = ev.calibration.bins;
    chart(
      document.getElementById("calibration"),
      {
        scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
        axes: [{ label: "confidence" }, { label: "accuracy" }],
        series: [
          { label: "confidence" },
          { label: `observed (ECE ${fmt(ev.calibration.ece, 3)})`, stroke: "#b5540b", width: 2, points: { show: true } },
          { label: "perfect", stroke: "#777", dash: [4, 4] },
        ],
      },
      [bins.map((b) => b.confidence), bins.map((b) => b.accuracy), bins.map((b) => b.confidence)],
    );
  }
}

async function finished(job) {
  if (evaluated || job.status !== "succeeded" || !job.artifacts) return;
  evaluated = true;
  const path = `/v1/models/${encodeURIComponent(job.model_name)}/versions/${job.artifacts.version}`;
  const [ev, version] = await Promise.all([api(`${path}/evaluation`), api(path)]);
  evaluation(ev);
  document.getElementById("split").textContent = splitText(version.card.dataset);
  inService(await api(`${path}/outcomes`).catch(() => null));
  document.getElementById("card-section").hidden = false;
  document.getElementById("card").textContent = JSON.stringify(version.card, null, 2);
}

// How training and validation were split: by patient where the data named them.
function splitText(d) {
  if (d.split_by === "patient") {
    const both = d.patients_in_both
      ? `${d.patients_in_both} with scans in both training and validation (a split the data gave, or a class of too few patients)`
      : "none with scans in both training and validation";
    return `Split by patient: ${d.patients} patients, ${both}.`;
  }
  if (d.split_by === "scan") return "Split scan by scan: the data names no patients, so one patient's scans may sit in both training and validation.";
  return "";
}

const FIGURES = ["accuracy", "auc", "sensitivity", "specificity"];
const ci = (e) => (e ? `${fmt(e.value, 3)} (${fmt(e.low, 3)}–${fmt(e.high, 3)})` : "–");

// The version's figures on the outcomes clients reported, beside its card's validation ones.
function inService(f) {
  if (!f) return; // the key may not read them, or the API did not answer: nothing to show
  document.getElementById("service-section").hidden = false;
  const root = document.getElementById("in-service");
  if (!f.reports) return root.replaceChildren(el("p", { class: "muted", text: "No outcome reported yet: confirmed diagnoses come back through Try a scan's Report, or POST …/outcomes." }));
  const rows = FIGURES.map((k) =>
    el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: ci(f[k]) }), el("td", { text: ci(f.validation[k]) }), el("td", { text: f.below_validation.includes(k) ? "below the card's" : "" })),
  );
  root.replaceChildren(
    el("p", { text: `${f.reports} reported outcome${f.reports === 1 ? "" : "s"} from ${f.reported_by}, decided by ${f.decision === "threshold" ? `threshold ${fmt(f.threshold, 3)}` : "the most probable class"}.` }),
    el("table", { class: "grid" }, el("caption", { text: "In service against validation, with 95% intervals" }), el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "figure" }), el("th", { scope: "col", text: "in service" }), el("th", { scope: "col", text: "card (validation)" }), el("th", { scope: "col", text: "" }))), el("tbody", {}, rows)),
  );
}

async function tick() {
  const [job, metrics, log] = await Promise.all([api(base), api(`${base}/metrics`), api(`${base}/logs?tail=40`)]);
  summary(job);
  curves(metrics);
  document.getElementById("log").textContent = log || "(no log yet)";
  await finished(job);
  return !FINISHED.has(job.status);
}

setup(async () => {
  every(2000, tick);
});
