// Try a scan: the training service forwards the upload to the inference service (same origin).
import { api, el, fmt, notice, setup } from "./common.js";

const modelSelect = document.getElementById("try-model");
const versionSelect = document.getElementById("try-version");
let models = [];

function fillVersions() {
  const m = models.find((x) => x.name === modelSelect.value);
  if (!m) return;
  const options = [
    ...Object.entries(m.aliases).map(([a, v]) => el("option", { value: `alias=${a}`, text: `${a} (version ${v})` })),
    ...m.versions.slice().reverse().map((v) => el("option", { value: `version=${v}`, text: `version ${v}` })),
  ];
  versionSelect.replaceChildren(...options);
}

function show(result, file) {
  const item = result.predictions ? result.predictions[0] : result;
  const rows = Object.entries(item.probabilities).map(([c, p]) =>
    el("tr", {}, el("th", { scope: "row", text: c }), el("td", { text: fmt(p, 4) }), el("td", {}, el("meter", { min: "0", max: "1", value: String(p), "aria-label": `P(${c})` }))),
  );
  document.getElementById("prediction").replaceChildren(
    el("p", { class: "verdict", "data-testid": "predicted-label", text: `Predicted: ${item.label}` }),
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

setup(async () => {
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
