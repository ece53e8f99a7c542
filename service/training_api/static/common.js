// Shared by every dashboard page: the user's key (sessionStorage only), API calls, small helpers.
const KEY = "scantune.apiKey";

export const key = () => sessionStorage.getItem(KEY);

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "application/json");
  if (key()) headers.set("Authorization", `Bearer ${key()}`);
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers, credentials: "omit" });
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" ? body : { detail: body });
  return body;
}

export function notice(message) {
  const el = document.getElementById("notice");
  el.textContent = message || "";
  el.hidden = !message;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// The body of `root`'s table (a new table with these column heads and caption unless
// `append`ing to the one there), for pages that list records and page back by cursor.
export function tableBody(root, columns, caption, append) {
  let body = root.querySelector("tbody");
  if (!append || !body) {
    body = el("tbody");
    const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c }))));
    root.replaceChildren(el("table", { class: "grid" }, el("caption", { class: "sr-only", text: caption }), head, body));
  }
  return body;
}

// One at a time: `run(work)` starts `work` once the one before it has ended, so a page of
// older records is never asked for while the list is drawn again from its first page (which
// resets the cursor: the first page would be appended again), nor twice with one cursor.
export function oneAtATime() {
  let last = Promise.resolve();
  return (work) => {
    const run = last.then(work);
    last = run.catch(() => {});
    return run;
  };
}

// A list drawn by a timer's refresh and at once by its controls, in the order its answers
// were asked for: `const turn = order.ask()` before fetching, then draw only if
// `order.draw(turn)`: false when an answer asked for later is drawn already (a control's,
// while a refresh was under way), which an older one must not replace.
export function inOrder() {
  let asked = 0;
  let drawn = 0;
  return {
    ask: () => ++asked,
    draw(turn) {
      if (turn < drawn) return false;
      drawn = turn;
      return true;
    },
  };
}

// The focus on a table row: its first control, else its heading cell (for a keyboard user
// whose button went: the Older button hidden on the last page, a row drawn again).
export function focusIn(row) {
  const target = row?.querySelector("button, a[href], input, select") || row?.querySelector("th");
  if (!target) return;
  if (target.tagName === "TH") target.tabIndex = -1;
  target.focus();
}

// Where the focus is among the rows `rows` (a selector; each row told apart by its data-id):
// the row and its control (by data-testid), for `restoreFocus` once the rows are drawn again;
// null when the focus is in none of them.
export function focusPlace(rows) {
  const at = document.activeElement;
  const row = at?.closest(`${rows}[data-id]`);
  return row ? { rows, id: row.dataset.id, control: at.dataset.testid } : null;
}

// The focus back where `place` was, the rows drawn again: on the same control of the same row
// (a keyboard user on a row's second button stays on it), else in that row (focusIn) — unless
// the focus was not lost (the control kept) or moved on meanwhile.
export function restoreFocus(place) {
  if (!place || document.activeElement !== document.body) return;
  const row = document.querySelector(`${place.rows}[data-id="${CSS.escape(place.id)}"]`);
  const control = place.control && row?.querySelector(`[data-testid="${CSS.escape(place.control)}"]`);
  if (control) control.focus();
  else focusIn(row);
}

// Pages back by cursor: `loadOlder()` appends the next page and hides `button` when there is
// no more; `rows()` lists the table's rows. The button that had the focus and went with the
// last page hands it to the first row that page appended. Returns the runner the page's other
// loads of the list go through.
export function olderButton(button, rows, loadOlder) {
  const run = oneAtATime();
  button.addEventListener("click", () =>
    run(async () => {
      if (button.hidden) return; // a second click that came before the last page
      const before = rows().length;
      await loadOlder();
      const lost = [button, document.body].includes(document.activeElement); // not moved on meanwhile
      if (button.hidden && lost) focusIn(rows()[before]);
    }).catch((err) => notice(err.message)),
  );
  return run;
}

export const fmt = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "–");

export function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// The status a person should read: a job that succeeded but whose gate failed says so.
export function statusText(job) {
  if (job.status === "succeeded" && job.promotion && !job.promotion.passed) return "succeeded · gate failed";
  if (job.status === "succeeded" && job.promotion && job.promotion.passed) return `succeeded · promoted to ${job.promotion.alias}`;
  return job.status;
}

// Every ~2 s while the tab is visible; `tick` returns false to stop.
export function every(ms, tick) {
  let timer = null;
  const run = async () => {
    let again = true;
    try {
      again = (await tick()) !== false;
    } catch (err) {
      notice(err.message);
    }
    if (again) timer = setTimeout(run, ms);
  };
  run();
  return () => clearTimeout(timer);
}

// Why a sign-in failed, for the person who typed the key: a wrong key, or a service that
// could not check it (its answer, or none) and may be tried again.
function signInError(err) {
  if (err.status === 401) return "That API key is not valid; type another.";
  const why = err.status ? `the service is unavailable (it answered HTTP ${err.status})` : "the service could not be reached";
  return `Your key could not be checked: ${why}. Try again in a moment.`;
}

// The key form in the header; `start(scopes)` runs once a key is known. The typed key leaves
// its field at once, whatever comes of it; a key the service refuses (401) is forgotten, and
// one it could not check is kept only if it was kept before (signed in on another page).
export function setup(start) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const who = document.getElementById("who");
  const forget = document.getElementById("forget-key");
  const begin = async (typed) => {
    let me;
    try {
      me = await api("/ui/api/whoami");
    } catch (err) {
      if (err.status === 401 || typed) {
        sessionStorage.removeItem(KEY);
        who.textContent = "";
        forget.hidden = true;
      }
      notice(signInError(err));
      return;
    }
    who.textContent = `signed in as ${me.name}`;
    forget.hidden = false;
    notice("");
    try {
      await start(new Set(me.scopes));
    } catch (err) {
      notice(err.message);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = input.value.trim();
    input.value = "";
    if (!typed) return;
    sessionStorage.setItem(KEY, typed);
    begin(true);
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  if (key()) begin(false);
  else notice("Type your API key above to see jobs and models.");
}

// uPlot, sized to its container.
export function chart(container, opts, data) {
  container.replaceChildren();
  const width = Math.max(280, container.clientWidth || 600);
  return new window.uPlot({ width, height: container.classList.contains("small") ? 260 : 300, ...opts }, data, container);
}

// A dashed vertical line at x = `at` (the best epoch), drawn after the series.
export function markX(at, label) {
  return {
    hooks: {
      draw: [
        (u) => {
          if (at === null || at === undefined) return;
          const x = u.valToPos(at, "x", true);
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#444";
          ctx.setLineDash([6, 4]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.fillStyle = "#222";
          ctx.font = `${12 * devicePixelRatio}px sans-serif`;
          ctx.fillText(label, x + 4, u.bbox.top + 14 * devicePixelRatio);
          ctx.restore();
        },
      ],
    },
  };
}
