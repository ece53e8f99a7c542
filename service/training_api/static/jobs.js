// Jobs: every job the key may see, updating while they run; submit and cancel.
import { api, age, el, every, fmt, focusPlace, inOrder, notice, restoreFocus, setup, statusText } from "./common.js";

function progressText(job) {
  const parts = [];
  if (job.epoch && job.epochs) parts.push(`epoch ${job.epoch}/${job.epochs}`);
  else parts.push(`${Math.round(100 * (job.progress || 0))}%`);
  const last = (job.history || []).at(-1);
  if (last && typeof last.val_auc === "number") parts.push(`val AUC ${fmt(last.val_auc, 3)}`);
  return parts.join(" · ");
}

// Cancel a queued or running job, then draw the list again at once: the row says cancelled.
function cancelButton(job, scopes) {
  const cancel = el("button", { type: "button", "data-testid": "cancel-job", "aria-label": `Cancel job ${job.id}`, text: "Cancel" });
  cancel.addEventListener("click", async () => {
    // Busy, not `disabled`: a disabled button loses the focus to the page (Chromium).
    if (cancel.getAttribute("aria-disabled") === "true") return;
    cancel.setAttribute("aria-disabled", "true");
    try {
      await api(`/v1/training-jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
      await refresh(scopes);
    } catch (err) {
      notice(err.message);
      cancel.removeAttribute("aria-disabled");
    }
  });
  return cancel;
}

function row(job, scopes) {
  const link = el("a", { href: `/ui/jobs/${encodeURIComponent(job.id)}`, "data-testid": "job-link", text: job.id.slice(0, 8) });
  const cancellable = scopes.has("jobs:write") && (job.status === "queued" || job.status === "running");
  const status = statusText(job);
  return el(
    "tr",
    { "data-testid": "job-row", "data-id": job.id, "data-job-id": job.id, "data-status": job.status },
    el("td", {}, link),
    el("td", { text: job.model_name }),
    el("td", { text: job.spec.base_model }),
    el("td", {}, el("span", { class: `status ${status.includes("gate failed") ? "gate-failed" : job.status}`, "data-testid": "job-status", text: status })),
    el("td", { "data-testid": "job-progress", text: progressText(job) }),
    el("td", { text: age(job.created_at), title: job.created_at }),
    el("td", {}, cancellable ? cancelButton(job, scopes) : null),
  );
}

const order = inOrder(); // a refresh asked for before a Cancel is not drawn after it

// The jobs drawn again; the control of a row that had the focus (Cancel, or the link) keeps it.
async function refresh(scopes) {
  const turn = order.ask();
  const page = await api("/v1/training-jobs?limit=50");
  if (!order.draw(turn)) return;
  const place = focusPlace("[data-testid=job-row]");
  document.querySelector("#jobs tbody").replaceChildren(...page.items.map((j) => row(j, scopes)));
  restoreFocus(place);
  document.getElementById("jobs-empty").hidden = page.items.length > 0;
  document.getElementById("jobs-updated").textContent = `(updated ${new Date().toLocaleTimeString()})`;
}

// "body/dataset/uri" -> "dataset.uri": the name of the form field it belongs to.
function fieldOf(loc) {
  const parts = String(loc).split("/");
  if (parts[0] !== "body") return null;
  while (parts.length > 2 && /^\d+$/.test(parts[parts.length - 1])) parts.pop(); // a list's item: the list's field
  const path = parts.slice(1).join(".");
  const field = document.querySelector(`[data-field="${CSS.escape(path)}"]`);
  return field ? path : null;
}

function spec(form) {
  const data = new FormData(form);
  const number = (name) => (data.get(name) === "" ? undefined : Number(data.get(name)));
  const body = {
    model_name: data.get("model_name"),
    dataset: { uri: data.get("dataset.uri"), format: data.get("dataset.format") },
    base_model: data.get("base_model"),
    image_size: number("image_size"),
    epochs: number("epochs"),
  };
  const alias = data.get("promote.alias");
  if (alias) {
    body.promote = { alias };
    const min = number("promote.min.val_auc");
    if (min !== undefined) body.promote.min = { val_auc: min };
  }
  if (data.get("access.private")) body.access = { private: true }; // unticked: the deployment's default
  const purpose = String(data.get("notes.purpose") || "").trim();
  const limitations = String(data.get("notes.limitations") || "").split("\n").map((l) => l.trim()).filter(Boolean);
  if (purpose || limitations.length) body.notes = { ...(purpose ? { purpose } : {}), limitations };
  return body;
}

// A minimum val AUC gates a promotion: with no alias to promote to, spec() would drop it and
// the job would go without the gate its user thinks set. Refused here, by the alias field.
function ungated(form) {
  const data = new FormData(form);
  if (data.get("promote.min.val_auc") === "" || data.get("promote.alias")) return null;
  const msg = "Name the alias to promote to: the minimum val AUC gates that promotion, and without an alias there is none.";
  return { errors: [{ loc: "body/promote/alias", msg }] };
}

function showErrors(form, problem) {
  const formError = document.getElementById("form-error");
  const loose = [];
  for (const error of problem.errors || []) {
    const field = fieldOf(error.loc);
    if (field) {
      const slot = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
      slot.textContent = error.msg;
      const input = document.getElementById(slot.id.replace(/^e-/, "f-"));
      if (input) input.setAttribute("aria-invalid", "true");
    } else loose.push(`${error.loc}: ${error.msg}`);
  }
  const text = loose.length ? loose.join("; ") : problem.errors ? "" : problem.detail;
  formError.textContent = text || "";
  formError.hidden = !text;
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  document.getElementById("form-error").hidden = true;
}

const STANDING = {
  new: "a new model, yours once published",
  owned: "your model",
  granted: "another client's model, granted to you",
};

function wireForm(scopes) {
  const form = document.getElementById("submit-form");
  if (!scopes.has("jobs:write")) {
    document.getElementById("submit-section").hidden = true;
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const refused = ungated(form);
    if (refused) {
      showErrors(form, refused);
      document.getElementById("f-promote-alias").focus();
      return;
    }
    try {
      if (event.submitter && event.submitter.value === "check") {
        // the API's dry run: the same checks as a submit, nothing queued
        const check = await api("/v1/training-jobs?dry_run=true", { method: "POST", json: spec(form) });
        notice(`The service would accept this job for ${check.model_name} (${STANDING[check.model]}); nothing was queued.`);
        return;
      }
      const job = await api("/v1/training-jobs", { method: "POST", json: spec(form) });
      notice(`Job ${job.id} ${job.status}.`);
      await refresh(scopes);
    } catch (err) {
      if (err.problem) showErrors(form, err.problem);
      else notice(err.message);
    }
  });
}

setup(async (scopes) => {
  wireForm(scopes);
  every(2000, () => refresh(scopes));
});
