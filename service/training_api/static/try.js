// Try a scan: the training service forwards the upload to the inference service (same origin).
// Once the diagnosis is confirmed, "Report" sends it as an outcome of the version that answered
// (POST /v1/models/{name}/versions/{n}/outcomes: what it said, and the truth; no scan), and
// "Withdraw the report" retracts it (the diagnosis was withdrawn: …/outcomes/retract).
import { api, el, fmt, notice, setup } from "./common.js";

const modelSelect = document.getElementById("try-model");
const versionSelect = document.getElementById("try-version");
let models = [];
let answered = null; // the last prediction: {model, version, reference, probabilities, signature}

function fillVersions() {
  const m = models.find((x) => x.name === modelSelect.value);
  if (!m) return;
  const options = [
    ...Object.entries(m.aliases).map(([a, v]) => el("option", { value: `alias=${a}`, text: `${a} (version ${v})` })),
    ...m.versions.slice().reverse().map((v) => el("option", { value: `version=${v}`, text: `version ${v}` })),
  ];
  versionSelect.replaceChildren(...options);
}

// What the card's input profile says of the scan (docs/inference.md); none for older cards.
function inputCheck(check) {
  if (!check) return [];
  const figures = `score ${fmt(check.score, 2)}, limit ${fmt(check.limit, 2)}`;
  const text = check.typical
    ? `The scan looks like those the model was trained on (${figures}).`
    : `This scan is unlike those the model was trained on (${figures}): the result may not apply.`;
  return [el("p", { class: check.typical ? "" : "notice", "data-testid": "input-check", "data-typical": String(check.typical), text })];
}

function show(result, file) {
  const item = result.predictions ? result.predictions[0] : result;
  // The signature (where inference signs) goes back with the outcome, as the answer gave it.
  answered = { model: result.model.name, version: result.model.version, reference: `${result.request_id}/0`, probabilities: item.probabilities, signature: item.signature };
  document.getElementById("outcome-label").replaceChildren(...Object.keys(item.probabilities).map((c) => el("option", { value: c, text: c })));
  document.getElementById("outcome-said").textContent = "";
  document.getElementById("outcome-retract").hidden = true;
  const rows = Object.entries(item.probabilities).map(([c, p]) =>
    el("tr", {}, el("th", { scope: "row", text: c }), el("td", { text: fmt(p, 4) }), el("td", {}, el("meter", { min: "0", max: "1", value: String(p), "aria-label": `P(${c})` }))),
  );
  document.getElementById("prediction").replaceChildren(
    el("p", { class: "verdict", "data-testid": "predicted-label", text: `Predicted: ${item.label}` }),
    ...inputCheck(item.input_check),
    el("table", { class: "grid" }, el("caption", { text: "Probability of each class (calibrated)" }), el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "class" }), el("th", { scope: "col", text: "probability" }), el("th", { scope: "col", text: "" }))), el("tbody", {}, rows)),
  );
  const scan = document.getElementById("scan-image");
  const isImage = /^image\/(png|jpeg)$/.test(file.type);
  scan.hidden = !isImage;
  if (isImage) scan.src = URL.createObjectURL(file);
  const cam = document.getElementById("cam-image");
  if (item.explanation) cam.src = `data:image/png;base64,${item.explanation.png_base64}`;
  cam.classList.toggle("alone", !isImage);
  document.getElementById("result").hidden = false;
}

async function report(event) {
  event.preventDefault();
  const said = document.getElementById("outcome-said");
  const { model, version, reference, probabilities, signature } = answered;
  const label = document.getElementById("outcome-label").value;
  const path = `/v1/models/${encodeURIComponent(model)}/versions/${version}/outcomes`;
  try {
    const outcome = signature ? { reference, label, probabilities, signature } : { reference, label, probabilities };
    const kept = await api(path, { method: "POST", json: { outcomes: [outcome] } });
    const figures = await api(path);
    said.textContent = `${kept.replaced ? "Corrected" : "Reported"}: ${counted(version, figures)}`;
    document.getElementById("outcome-retract").hidden = false;
    notice("");
  } catch (err) {
    said.textContent = "";
    notice(err.message);
  }
}

function counted(version, figures) {
  const accuracy = figures.accuracy ? `, accuracy ${fmt(figures.accuracy.value, 3)}` : "";
  return `version ${version} has ${figures.reports} reported outcome${figures.reports === 1 ? "" : "s"}${accuracy}.`;
}

async function retract() {
  const said = document.getElementById("outcome-said");
  const { model, version, reference } = answered;
  const path = `/v1/models/${encodeURIComponent(model)}/versions/${version}/outcomes`;
  try {
    await api(`${path}/retract`, { method: "POST", json: { references: [reference] } });
    said.textContent = `Withdrawn: ${counted(version, await api(path))}`;
    document.getElementById("outcome-retract").hidden = true;
    notice("");
  } catch (err) {
    notice(err.message);
  }
}

setup(async () => {
  document.getElementById("outcome-form").addEventListener("submit", report);
  document.getElementById("outcome-retract").addEventListener("click", retract);
  models = (await api("/v1/models")).items;
  modelSelect.replaceChildren(...models.map((m) => el("option", { value: m.name, text: m.name })));
  fillVersions();
  modelSelect.addEventListener("change", fillVersions);
  document.getElementById("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("scan").files[0];
    if (!file) return notice("Choose a scan first.");
    const body = new FormData();
    body.append("file", file, file.name);
    const query = new URLSearchParams(versionSelect.value || "");
    query.set("explain", "true");
    try {
      notice("");
      show(await api(`/ui/api/predict/${encodeURIComponent(modelSelect.value)}?${query}`, { method: "POST", body }), file);
    } catch (err) {
      notice(err.message);
    }
  });
});
