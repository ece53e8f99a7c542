// DICOM node: its series newest first (GET /ui/api/series, relayed to the node with the user's
// key), each with its deliveries; "Send now" (admin) tries a series' pending work at once;
// "Fetch again" fills the fetch form in for a series that ended unclassified;
// "Fetch" (series:retrieve) has the node fetch a study from a PACS, and lists the key's recent
// fetches, each still going with a "Cancel"; "Recalls" lists the versions recalled at the node
// with what became of their withdrawals, and its form (admin, the node checks) recalls one;
// "Lift…" (admin) lifts a recall in force, once the user says why; "Purges" lists the studies
// forgotten at the node, and its form (admin) purges one, "Release…" ending a block (purges.js).
import { age, api, el, every, focusIn, focusPlace, inOrder, notice, olderButton, restoreFocus, setup, tableBody } from "./common.js";
import { problemText, confirmedForm } from "./confirm.js";
import { loadPurges, purgeForm } from "./purges.js";

const COLUMNS = ["Received", "Study / series", "State", "Model", "Instances", "Deliveries", ""];
let cursor = null;
let pages = 1;
let admin = false;
let fetcher = false; // the key may have the node fetch from a PACS (series:retrieve)

// When a delivery or withdrawal still being tried is tried next; "" for one that is not.
function nextTry(item) {
  return item.state === "pending" && item.next_attempt_at ? `, next try ${item.next_attempt_at.slice(11, 19)} UTC` : "";
}

function delivery(d) {
  const when = nextTry(d);
  const tries = d.attempts ? `, ${d.attempts} failed ${d.attempts === 1 ? "try" : "tries"}` : "";
  // Refused for what the result is: not tried again until a person sends it again.
  return el(
    "li",
    { "data-testid": "delivery", "data-state": d.state },
    el("span", { class: `status ${d.state === "done" ? "succeeded" : d.attempts ? "failed" : ""}`, text: d.state }),
    ` ${d.destination}${tries}${when}${d.state === "rejected" ? ", not retried" : ""}`,
    d.last_error && d.state !== "done" ? el("div", { class: "muted", text: `last error: ${d.last_error}` }) : null,
  );
}

// A button that POSTs to `path`, then draws `redraw` again (given the service's answer); a
// refusal is said and the button may be clicked again.
function postButton(attrs, path, redraw) {
  const button = el("button", { type: "button", ...attrs });
  button.addEventListener("click", async () => {
    // Busy, not `disabled`: a disabled button loses the focus to the page (Chromium), and a
    // keyboard user their place in the table.
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    const row = button.closest("tr[data-id]");
    try {
      const answer = await api(path, { method: "POST" });
      notice("");
      await redraw(answer);
      if (row && !button.isConnected && document.activeElement === document.body) focusRow(row.dataset.testid, row.dataset.id);
    } catch (err) {
      notice(err.message);
      button.removeAttribute("aria-disabled");
    }
  });
  return button;
}

// The focus back in a table's row drawn again whose button went with the redraw: on its first
// control, else on its heading cell.
function focusRow(testid, id) {
  focusIn(document.querySelector(`[data-testid="${testid}"][data-id="${id}"]`));
}

function sendNow(s) {
  if (!admin || !["receiving", "delivering", "rejected"].includes(s.state)) return null;
  const attrs = { "data-testid": "send-now", text: "Send now", "aria-label": `Send series ${s.id} now` };
  return postButton(attrs, `/ui/api/series/${s.id}/send-now`, () => reload());
}

// A series that ended unclassified (failed, expired: its files deleted) is fetched again
// from a PACS that holds it: the form is filled in, with the source that sent it where the
// node knows it (else the user names one), and the user fetches.
function fetchAgain(s) {
  if (!fetcher || !["failed", "expired"].includes(s.state)) return null;
  const button = el("button", { type: "button", "data-testid": "fetch-again", text: "Fetch again", "aria-label": `Fetch series ${s.id} again from a PACS` });
  button.addEventListener("click", () => {
    const fetchForm = document.getElementById("retrieve-form");
    fetchForm.elements.study_instance_uid.value = s.study_instance_uid;
    fetchForm.elements.series_instance_uid.value = s.series_instance_uid;
    if (s.source) fetchForm.elements.source.value = s.source;
    document.getElementById("retrieved").textContent = s.source
      ? `Series ${s.id} filled in, from ${s.source} that sent it: Fetch.`
      : `Series ${s.id} filled in: name the PACS that holds it, then Fetch.`;
    fetchForm.scrollIntoView();
    fetchForm.elements.source.focus();
  });
  return button;
}

function row(s) {
  const error = s.last_error ? el("div", { class: "muted", text: `last error: ${s.last_error}` }) : null;
  // Before its result is made, where the route will send it (its chosen destinations).
  const planned = s.destinations ? `to ${s.destinations.join(", ")}` : "–";
  const deliveries = s.deliveries.length ? el("ul", { class: "plain" }, s.deliveries.map(delivery)) : el("span", { class: "muted", text: planned });
  return el(
    "tr",
    { "data-testid": "series-row", "data-state": s.state, "data-id": String(s.id) },
    el("td", { text: age(s.created_at) }),
    el("th", { scope: "row" }, el("code", { text: s.study_instance_uid }), el("div", { class: "muted" }, el("code", { text: s.series_instance_uid }))),
    el("td", {}, el("span", { class: `status ${s.state === "done" ? "succeeded" : s.state}`, text: s.state }), error),
    el("td", { text: s.model ? `${s.model}${s.version ? ` v${s.version}` : ""}${s.alias ? ` (${s.alias})` : ""}` : "–" }),
    el("td", { text: String(s.instances) }),
    el("td", {}, deliveries),
    el("td", {}, sendNow(s), fetchAgain(s)),
  );
}

function query(form, withCursor) {
  const params = new URLSearchParams({ limit: "50" });
  for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
  if (withCursor && cursor) params.set("cursor", cursor);
  return params;
}

let form = null;

async function load(append) {
  const page = await api(`/ui/api/series?${query(form, append)}`);
  cursor = page.next_cursor;
  const root = document.getElementById("series");
  const body = tableBody(root, COLUMNS, "Series the node received, newest first", append);
  body.append(...page.items.map(row));
  if (!body.children.length) root.replaceChildren(el("p", { class: "muted", text: "No series matches." }));
  document.getElementById("series-older").hidden = !cursor;
}

const ORDER_COLUMNS = ["Received", "Accession number", "State", "Tries", "Studies fetched"];

function orderRow(o) {
  const why = o.last_error && o.state !== "fetched" ? el("div", { class: "muted", text: `last: ${o.last_error}` }) : null;
  const studies = o.study_instance_uids.length ? el("ul", { class: "plain" }, o.study_instance_uids.map((uid) => el("li", {}, el("code", { text: uid })))) : "–";
  return el(
    "tr",
    { "data-testid": "order-row", "data-state": o.state },
    el("td", { text: age(o.created_at) }),
    el("th", { scope: "row" }, el("code", { text: o.accession_number })),
    el("td", {}, el("span", { class: `status ${o.state === "fetched" ? "succeeded" : o.state === "expired" ? "failed" : ""}`, text: o.state }), why),
    el("td", { text: String(o.attempts) }),
    el("td", {}, studies),
  );
}

// The RIS's orders (HL7 ORM^O01), newest first; shown only where the node has taken any.
async function loadOrders() {
  const page = await api("/ui/api/orders?limit=20");
  const root = document.getElementById("orders");
  document.getElementById("orders-heading").hidden = !page.items.length;
  if (!page.items.length) return root.replaceChildren();
  const body = tableBody(root, ORDER_COLUMNS, "Orders from the RIS, newest first", false);
  body.append(...page.items.map(orderRow));
}

const OUTCOME_COLUMNS = ["Classified", "Accession number", "Model", "State", "Confirmed class"];
const OUTCOME_TONE = { sent: "succeeded", refused: "failed" };

// A scan whose confirmed outcome the RIS's report gives: waiting for the report, then sent
// to the training service (or refused there, with the reason); retracted there when a
// corrected report confirmed no class after all.
function outcomeRow(o) {
  const why = o.last_error && o.state !== "sent" ? el("div", { class: "muted", text: `last: ${o.last_error}` }) : null;
  return el(
    "tr",
    { "data-testid": "outcome-row", "data-state": o.state },
    el("td", { text: age(o.classified_at) }),
    el("th", { scope: "row" }, el("code", { text: o.accession_number })),
    el("td", { text: `${o.model} v${o.version}` }),
    el("td", {}, el("span", { class: `status ${OUTCOME_TONE[o.state] || ""}`, text: o.state }), why),
    el("td", { text: o.label || "–" }),
  );
}

// Shown only where the node follows outcomes (it keeps none otherwise).
// A final report kept for scans of its exam still to come, and the class it confirms.
function heldRow(r) {
  const confirms = Object.entries(r.confirms).map(([model, c]) => `${model}: ${c || "no class"}`).join("; ");
  return el(
    "tr",
    { "data-testid": "held-report-row" },
    el("td", { text: age(r.received_at) }),
    el("th", { scope: "row" }, el("code", { text: r.accession_number })),
    el("td", { text: confirms }),
  );
}

async function loadHeldReports() {
  const page = await api("/ui/api/outcome-reports/exams?held=true&limit=20");
  const root = document.getElementById("held-reports");
  for (const id of ["held-heading", "held-note"]) document.getElementById(id).hidden = !page.items.length;
  if (!page.items.length) return root.replaceChildren();
  const body = tableBody(root, ["Reported", "Accession number", "Confirms"], "The RIS's reports whose exam has no scan here yet, newest first", false);
  body.append(...page.items.map(heldRow));
}

async function loadOutcomeReports() {
  const page = await api("/ui/api/outcome-reports?limit=20");
  const root = document.getElementById("outcome-reports");
  document.getElementById("outcomes-heading").hidden = !page.items.length;
  if (!page.items.length) return root.replaceChildren();
  const body = tableBody(root, OUTCOME_COLUMNS, "Scans and the outcomes the RIS's reports confirmed, newest first", false);
  body.append(...page.items.map(outcomeRow));
}

// The first pages again (as many as were shown, or the first only: a new filter), so a refresh
// keeps what the user paged to; one load at a time with the Older button's (its runner, once
// the page starts). The control of a series row that had the focus keeps it.
let inTurn = (work) => work();

function reload(firstOnly = false) {
  return inTurn(async () => {
    if (firstOnly) pages = 1;
    const place = focusPlace("[data-testid=series-row]");
    cursor = null;
    await load(false);
    for (let i = 1; i < pages && cursor; i++) await load(true);
    restoreFocus(place);
  });
}

const FETCH_COLUMNS = ["Asked", "Source", "Study", "State", "Instances sent", ""];
const GOING = ["running", "cancelling"];

// Stop a fetch still going: the node cancels the PACS's C-MOVE; what came is classified.
function cancelFetch(r) {
  if (r.state !== "running") return null;
  const attrs = { "data-testid": "cancel-fetch", text: "Cancel", "aria-label": `Cancel retrieval ${r.id}` };
  return postButton(attrs, `/ui/api/retrievals/${r.id}/cancel`, loadFetches);
}

function fetchRow(r) {
  const study = r.study_instance_uids.join(", ") || r.study_instance_uid || (r.accession_number ? `accession ${r.accession_number}` : "–");
  const sent = GOING.includes(r.state) ? "…" : `${r.completed + r.warning}${r.failed ? `, ${r.failed} failed` : ""}`;
  const tone = r.state === "done" ? "succeeded" : GOING.includes(r.state) ? "" : "failed";
  return el(
    "tr",
    { "data-testid": "fetch-row", "data-id": String(r.id), "data-state": r.state },
    el("td", { text: age(r.created_at) }),
    el("td", { text: r.source }),
    el("th", { scope: "row" }, el("code", { text: study })),
    el("td", {}, el("span", { class: `status ${tone}`, text: r.state }), r.error ? el("div", { class: "muted", text: r.error }) : null),
    el("td", { "data-testid": "fetch-sent", text: sent }),
    el("td", {}, cancelFetch(r)),
  );
}

// The key's own background retrievals, newest first (GET /ui/api/retrievals, relayed).
async function loadFetches() {
  const page = await api("/ui/api/retrievals?limit=10");
  const root = document.getElementById("fetches");
  document.getElementById("fetches-heading").hidden = !page.items.length;
  if (!page.items.length) return root.replaceChildren();
  const place = focusPlace("[data-testid=fetch-row]");
  tableBody(root, FETCH_COLUMNS, "Your recent fetches from a PACS, newest first", false).append(...page.items.map(fetchRow));
  restoreFocus(place);
}

// Fetch a study in the background (a large one takes minutes): the node answers at once with
// the retrieval's id, the page asks how it goes until it ends, then lists that study.
async function ended(id) {
  for (;;) {
    const got = await api(`/ui/api/retrievals/${id}`);
    if (!GOING.includes(got.state)) return got;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function retrieval() {
  const fetchForm = document.getElementById("retrieve-form");
  const said = document.getElementById("retrieved");
  fetchForm.hidden = false;
  loadFetches().catch((err) => notice(err.message));
  fetchForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = fetchForm.querySelector("button");
    const asked = Object.fromEntries([...new FormData(fetchForm)].filter(([, value]) => value));
    button.disabled = true;
    said.textContent = `Asking ${asked.source}…`;
    try {
      const taken = await api("/ui/api/retrievals", { method: "POST", json: { ...asked, wait: false } });
      said.textContent = `Retrieval ${taken.id}: ${asked.source} is sending…`;
      await loadFetches();
      const got = await ended(taken.id);
      await loadFetches();
      if (!["done", "cancelled"].includes(got.state)) throw new Error(got.error || `the retrieval ${got.state}`);
      const sent = got.completed + got.warning;
      const before = got.state === "cancelled" ? "Cancelled: " : "";
      said.textContent = `${before}${got.source} sent ${sent} instance${sent === 1 ? "" : "s"}${got.failed ? `, ${got.failed} failed` : ""}.`;
      notice("");
      if (form && got.study_instance_uids.length === 1) {
        form.elements.study_instance_uid.value = got.study_instance_uids[0];
        form.elements.state.value = "";
        await reload(true);
      }
    } catch (err) {
      said.textContent = "";
      notice(err.message);
      await loadFetches().catch(() => {}); // a refused one is not kept: the list is as it was
    } finally {
      button.disabled = false;
    }
  });
}

const RECALL_COLUMNS = ["Recalled", "Model", "Reason", "By", "State", "Series recalled", "Deliveries stopped", "Withdrawn", "Pending", "To act on", ""];
const WITHDRAWAL_COLUMNS = ["Series", "Study Instance UID", "Destination", "State", "Last error"];
const TO_ACT_ON = ["not_kept", "rejected", "expired"]; // a person withdraws these by hand
const shown = new Set(); // the recalls whose open withdrawals are listed, kept over refreshes
let lifting = null; // the recall the lift form is open for (the form outlives a redraw)

// `reason`: the recall's; a withdrawal made before the recall was lifted and made anew keeps
// the reason of then, shown (a person withdrawing it by hand tells the destination that one).
function withdrawalRow(w, reason) {
  const tries = w.attempts ? ` (${w.attempts} ${w.attempts === 1 ? "try" : "tries"})` : "";
  const earlier = w.reason && w.reason !== reason ? el("div", { class: "muted", "data-testid": "withdrawal-reason", text: `recalled for: ${w.reason}` }) : null;
  return el(
    "tr",
    { "data-testid": "withdrawal-row", "data-state": w.state },
    el("th", { scope: "row", text: String(w.series_id) }),
    el("td", {}, el("code", { text: w.study_instance_uid })),
    el("td", { text: w.destination }),
    el("td", {}, el("span", { class: `status ${TO_ACT_ON.includes(w.state) ? "failed" : ""}`, text: w.state }), tries, nextTry(w), earlier),
    el("td", { text: w.last_error || "–" }),
  );
}

// Under its recall's row: the withdrawals not done, those a person must act on first.
function openWithdrawals(r) {
  const cell = el("td", { colspan: String(RECALL_COLUMNS.length), class: "nested" });
  if (!r.open.length) cell.append(el("p", { class: "muted", text: "No withdrawal left open: each result delivered was withdrawn, or none had been delivered." }));
  else {
    const head = el("thead", {}, el("tr", {}, WITHDRAWAL_COLUMNS.map((c) => el("th", { scope: "col", text: c }))));
    const caption = el("caption", { class: "sr-only", text: `Withdrawals of recall ${r.id} not done, those to act on first` });
    cell.append(el("table", { class: "grid" }, caption, head, el("tbody", {}, r.open.map((w) => withdrawalRow(w, r.reason)))));
  }
  return el("tr", { id: `recall-open-${r.id}`, "data-testid": "recall-open" }, cell);
}

function showButton(r) {
  const open = shown.has(r.id);
  const button = el("button", {
    type: "button",
    "data-testid": "recall-show",
    text: open ? "Hide" : "Show",
    "aria-label": `${open ? "Hide" : "Show"} the open withdrawals of recall ${r.id}`,
    "aria-expanded": String(open),
    "aria-controls": open ? `recall-open-${r.id}` : null,
  });
  button.addEventListener("click", async () => {
    if (open) shown.delete(r.id);
    else shown.add(r.id);
    try {
      await loadRecalls();
      notice("");
    } catch (err) {
      notice(err.message);
    }
  });
  return button;
}

function recallRow(r) {
  const w = r.withdrawals;
  const act = TO_ACT_ON.reduce((sum, state) => sum + w[state], 0);
  const which = TO_ACT_ON.filter((state) => w[state]).map((state) => `${state} ${w[state]}`).join(", ");
  return el(
    "tr",
    { "data-testid": "recall-row", "data-id": String(r.id), "data-state": r.state },
    el("td", { text: age(r.created_at) }),
    el("th", { scope: "row", text: `${r.model} v${r.version}` }),
    el("td", { text: r.reason }),
    el("td", { text: r.requested_by }),
    el("td", {}, el("span", { class: "status", text: r.state }), liftedText(r)),
    el("td", { "data-testid": "recall-series", text: String(r.series) }),
    el("td", { "data-testid": "recall-stopped", text: String(r.stopped) }),
    el("td", { "data-testid": "recall-done", text: String(w.done) }),
    el("td", { "data-testid": "recall-pending", text: String(w.pending) }),
    el("td", { "data-testid": "recall-to-act-on" }, act ? el("span", { class: "status failed", text: String(act) }) : "0", which ? el("div", { class: "muted", text: which }) : null),
    el("td", {}, showButton(r), retryButton(r), liftButton(r)),
  );
}

function liftedText(r) {
  if (r.state !== "lifted") return null;
  return el("div", { class: "muted", "data-testid": "recall-lifted", text: `${age(r.lifted_at)} by ${r.lifted_by}: ${r.lift_reason}` });
}

function liftButton(r) {
  if (!admin || r.state === "lifted") return null;
  const button = el("button", { type: "button", "data-testid": "recall-lift", text: "Lift…", "aria-label": `Lift recall ${r.id} of ${r.model} v${r.version}` });
  button.addEventListener("click", () => openLift(r));
  return button;
}

// Lift a recall: the form says what stays (its series recalled, its withdrawals going on) and
// asks why; then the node lifts it, and the version's later results go out again.
function openLift(r) {
  lifting = r;
  document.getElementById("lift-confirm-text").textContent =
    `Lift recall ${r.id} of ${r.model} version ${r.version}? The series it classifies from now on are delivered again. What the recall did stays: the ${r.series} series it recalled stay recalled and its withdrawals go on (a result that should stand is restored by hand where it went).`;
  document.getElementById("lift-error").hidden = true;
  document.getElementById("lifted").textContent = "";
  const liftAt = document.getElementById("lift-form");
  liftAt.hidden = false;
  liftAt.elements.reason.focus();
}

function recallControl(id, testid) {
  return document.querySelector(`[data-testid=recall-row][data-id="${id}"] [data-testid=${testid}]`);
}

function liftForm() {
  const liftAt = document.getElementById("lift-form");
  const yes = document.getElementById("lift-yes");
  const error = document.getElementById("lift-error");
  const close = () => {
    liftAt.hidden = true;
    liftAt.reset();
    lifting = null;
  };
  document.getElementById("lift-no").addEventListener("click", () => {
    const id = lifting?.id;
    close();
    recallControl(id, "recall-lift")?.focus();
  });
  liftAt.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!lifting) return;
    yes.disabled = true;
    try {
      const r = await api(`/ui/api/recalls/${lifting.id}/lift`, { method: "POST", json: { reason: liftAt.elements.reason.value.trim() } });
      close();
      document.getElementById("lifted").textContent = `Recall ${r.id}: ${r.model} v${r.version} lifted; its later results go out again.`;
      await loadRecalls();
      recallControl(r.id, "recall-show")?.focus();
    } catch (err) {
      error.textContent = problemText(err);
      error.hidden = false;
    } finally {
      yes.disabled = false;
    }
  });
}

// A destination refused a withdrawal and has been mended: send the refused ones again (admin).
// The row is drawn at once from the node's answer (the withdrawals due again, pending).
function retryButton(r) {
  if (!admin || !r.withdrawals.rejected) return null;
  const attrs = { "data-testid": "recall-retry", text: "Send again", "aria-label": `Send the refused withdrawals of recall ${r.id} again` };
  return postButton(attrs, `/ui/api/recalls/${r.id}/retry`, drawRecall);
}

const recallsOrder = inOrder(); // a refresh's list, asked for before Send again, not drawn after it
const RECALL_ROWS = "[data-testid=recall-row]";

// One recall's row (and its open withdrawals, where shown) drawn again from the node's view of
// it (`GET` or a `POST`'s answer: the same, with its open withdrawals); the focus kept.
function drawRecall(r) {
  const drawn = document.querySelector(`${RECALL_ROWS}[data-id="${r.id}"]`);
  if (!drawn) return loadRecalls();
  recallsOrder.draw(recallsOrder.ask());
  const place = focusPlace(RECALL_ROWS);
  document.getElementById(`recall-open-${r.id}`)?.remove();
  drawn.replaceWith(recallRow(r), ...(shown.has(r.id) ? [openWithdrawals(r)] : []));
  restoreFocus(place);
}

// The recalls, newest first (GET /ui/api/recalls), each shown one with its open withdrawals
// (GET /ui/api/recalls/{id}); the control of a row that had the focus keeps it over a redraw.
async function loadRecalls() {
  const turn = recallsOrder.ask();
  const page = await api("/ui/api/recalls?limit=50");
  const details = new Map();
  for (const r of page.items) if (shown.has(r.id)) details.set(r.id, await api(`/ui/api/recalls/${r.id}`));
  if (!recallsOrder.draw(turn)) return;
  const root = document.getElementById("recalls");
  if (!page.items.length) return root.replaceChildren(el("p", { class: "muted", text: "No version has been recalled at the node." }));
  const place = focusPlace(RECALL_ROWS);
  const body = tableBody(root, RECALL_COLUMNS, "Recalls at the node, newest first", false);
  for (const r of page.items) body.append(recallRow(r), ...(details.has(r.id) ? [openWithdrawals(details.get(r.id))] : []));
  restoreFocus(place);
}

// Recall a version: the form asks once more (it sends rejection notes to hospital systems),
// then the node records it (202) or answers with the version's first recall (200).
function recallForm() {
  const form = confirmedForm("recall", document.getElementById("recalled"), {
    ask: (data) => {
      const body = { model: data.get("model").trim(), version: Number(data.get("version")), reason: data.get("reason").trim() };
      return [body, `Recall ${body.model} version ${body.version}? Every series it classified ends recalled, its results not yet sent are never sent, and each PACS, RIS or FHIR server that got one is sent a rejection note or correction saying: "${body.reason}".`];
    },
    send: async (body) => {
      const r = await api("/ui/api/recalls", { method: "POST", json: body });
      const before = r.reason !== body.reason ? ` It was recalled before, by ${r.requested_by}: "${r.reason}".` : "";
      return `Recall ${r.id}: ${r.model} v${r.version} ${r.state === "new" ? "recorded; the node applies it within a moment" : "applied"}.${before}`;
    },
    then: loadRecalls,
  });
  // The facts page of a withdrawn version links here with its model and version.
  const linked = new URLSearchParams(location.search);
  for (const name of ["model", "version"]) if (linked.get(name)) form.elements[name].value = linked.get(name);
}

setup(async (scopes) => {
  fetcher = scopes.has("series:retrieve");
  if (fetcher) retrieval();
  if (!scopes.has("series:read")) {
    if (!scopes.has("series:retrieve")) notice("The DICOM node's series need a key with the series:read scope.");
    return;
  }
  admin = scopes.has("admin");
  document.getElementById("recalls-section").hidden = false; // the form too: the node checks admin
  recallForm();
  liftForm();
  document.getElementById("purges-section").hidden = false;
  if (admin) purgeForm();
  form = document.getElementById("series-filter");
  form.hidden = false;
  // A link may name the filter (the facts page of a withdrawn version: the series it classified).
  for (const [name, value] of new URLSearchParams(location.search)) if (form.elements[name]) form.elements[name].value = value;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await reload(true);
      notice("");
    } catch (err) {
      notice(err.message);
    }
  });
  const older = document.getElementById("series-older");
  inTurn = olderButton(older, () => document.querySelectorAll("#series tbody tr"), async () => {
    await load(true);
    pages += 1;
  });
  every(5000, async () => {
    await reload(); // series move on their own: received, classified, delivered
    await loadOrders();
    await loadOutcomeReports();
    await loadHeldReports();
    if (scopes.has("series:retrieve")) await loadFetches();
    await loadRecalls();
    await loadPurges();
  }); // a tick that returns nothing goes on
});
