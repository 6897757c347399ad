/* tuner dashboard: what every page shares.
 *
 * Rules: data is only ever put into the page with textContent / setAttribute on safe
 * attributes (never innerHTML); the token lives in sessionStorage and travels as
 * "Authorization: Bearer"; pages poll the JSON API and patch the DOM in place.
 */
"use strict";

const T = (() => {
  const TOKEN_KEY = "tuner.token";
  const ROLE_KEY = "tuner.role";
  const POLL_MS = 2000;

  // ---- auth ---------------------------------------------------------------------------
  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  function role() { return sessionStorage.getItem(ROLE_KEY); }
  function isAdmin() { return role() === "admin"; }

  function toLogin() {
    const here = location.pathname + location.search;
    location.assign("/ui/login?next=" + encodeURIComponent(here));
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ROLE_KEY);
    location.assign("/ui/login");
  }

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail || code || ("HTTP " + status));
      this.status = status;
      this.code = code;
    }
  }

  const etags = new Map();

  /* fetch JSON from the API. opts.method, opts.body (an object), opts.conditional (send
   * If-None-Match and resolve to null when nothing changed). */
  async function api(path, opts = {}) {
    const headers = { "Accept": "application/json" };
    const tok = opts.token || token();
    if (tok) headers["Authorization"] = "Bearer " + tok;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.conditional && etags.has(path)) headers["If-None-Match"] = etags.get(path);
    const resp = await fetch(path, {
      method: opts.method || "GET", headers, cache: "no-store",
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    if (resp.status === 304) return null;
    if (resp.status === 204) return {};
    let payload = null;
    try { payload = await resp.json(); } catch (_e) { payload = null; }
    if (!resp.ok) {
      if (resp.status === 401 && !opts.token) { toLogin(); }
      const code = payload && payload.error;
      const detail = payload && payload.detail;
      throw new ApiError(resp.status, code, typeof detail === "string" ? detail : null);
    }
    if (opts.conditional && resp.headers.get("ETag")) etags.set(path, resp.headers.get("ETag"));
    return payload;
  }

  // ---- DOM helpers --------------------------------------------------------------------
  /* el("a", {href: "/x", className: "y"}, "text", child) — strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "className") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k === "dataset") Object.assign(node.dataset, v);
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /* Set a node's text only when it changes (no needless layout, no flicker). */
  function setText(node, text) {
    const s = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  /* Replace node's children with `children` only when their text differs. */
  function setChildren(node, children) {
    const key = children.map((c) => (c instanceof Node ? c.textContent : String(c))).join("\u0001");
    if (node.dataset.key === key) return;
    node.dataset.key = key;
    node.replaceChildren(...children);
  }

  /* Keyed table body patching: rows are reused by key, cells patched by `fill(row, item,
   * fresh)`; rows are moved only when out of order and removed when gone. */
  function patchRows(tbody, items, keyOf, create, fill) {
    const existing = new Map();
    for (const tr of Array.from(tbody.children)) existing.set(tr.dataset.rowKey, tr);
    let cursor = tbody.firstElementChild;
    const seen = new Set();
    for (const item of items) {
      const key = String(keyOf(item));
      seen.add(key);
      let tr = existing.get(key);
      const fresh = !tr;
      if (fresh) {
        tr = create(item);
        tr.dataset.rowKey = key;
      }
      fill(tr, item, fresh);
      if (tr !== cursor) tbody.insertBefore(tr, cursor);
      else cursor = cursor.nextElementSibling;
    }
    for (const [key, tr] of existing) {
      if (!seen.has(key) && !(key === "__empty__" && items.length === 0)) tr.remove();
    }
  }

  function emptyRow(tbody, colspan, text) {
    if (tbody.children.length === 0) {
      const tr = el("tr", { className: "empty" }, el("td", { colspan }, text));
      tr.dataset.rowKey = "__empty__";
      tbody.append(tr);
    }
  }

  // ---- formatting ---------------------------------------------------------------------
  function fmtValue(v, kind) {
    if (kind && kind !== "finite") return kind;
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(3);
    return String(Number(v.toPrecision(5)));
  }

  function toMs(t) {
    if (t === null || t === undefined) return null;
    if (typeof t === "number") return t * 1000;
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }

  function fmtAge(t, now) {
    const ms = toMs(t);
    if (ms === null) return "—";
    let s = Math.max(0, ((now || Date.now()) - ms) / 1000);
    if (s < 60) return Math.floor(s) + " s ago";
    s /= 60;
    if (s < 60) return Math.floor(s) + " min ago";
    s /= 60;
    if (s < 48) return Math.floor(s) + " h ago";
    return Math.floor(s / 24) + " d ago";
  }

  function fmtTime(t) {
    const ms = toMs(t);
    if (ms === null) return "—";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function fmtParams(params) {
    return Object.entries(params || {})
      .map(([k, v]) => k + "=" + (typeof v === "number" ? fmtValue(v) : JSON.stringify(v)))
      .join(", ");
  }

  function fmtInt(n) { return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"); }

  /* A trial's colour: red only for failures; a trial waiting at a rung and a planned early
   * stop are neutral (the scheduler meant them). */
  const STATE_COLORS = {
    running: "#2563eb", pending: "#94a3b8", paused: "#0e7490", lost: "#9333ea",
    completed: "#16a34a", stopped: "#64748b", failed: "#b91c1c", cancelled: "#4b5563",
  };
  /* The words for a trial's state ("paused" is the experiment's word: a trial waits). */
  const TRIAL_WORDS = {
    pending: "queued", running: "running", paused: "waiting", lost: "lost",
    completed: "completed", stopped: "stopped early", failed: "failed", cancelled: "cancelled",
  };

  /* A trial's label and CSS class: "waiting at rung 2", "stopped at rung 1", ... */
  function trialStatus(t) {
    const atRung = t.rung !== null && t.rung !== undefined && t.rung >= 0;
    if (t.state === "paused") {
      return { text: atRung ? "waiting at rung " + t.rung : "waiting", cls: "trial-waiting" };
    }
    if (t.state === "stopped") {
      return { text: atRung ? "stopped at rung " + t.rung : "stopped", cls: "trial-stopped" };
    }
    return { text: TRIAL_WORDS[t.state] || t.state, cls: "trial-" + t.state };
  }

  function setTrialBadge(node, t) {
    const st = trialStatus(t);
    const cls = "badge " + st.cls;
    if (node.className !== cls) node.className = cls;
    setText(node, st.text);
  }

  /* How people name a trial: "2/3" is trial 3 of experiment 2. */
  function trialName(experimentId, number) { return experimentId + "/" + number; }
  function trialUrl(experimentId, number) {
    return "/ui/experiments/" + experimentId + "/trials/" + number;
  }

  /* One trial by its number: GET /api/v1/experiments/{id}/trials/{number}. */
  function trialByNumber(experimentId, number) {
    return api("/api/v1/experiments/" + experimentId + "/trials/" + number);
  }

  /* Whether GET `path` finds its subject: false only on a 404 (any other error is the
   * page's poll to report). */
  async function exists(path) {
    try {
      await api(path);
      return true;
    } catch (e) {
      return !(e && e.status === 404);
    }
  }

  /* The whole page when its subject does not exist: one sentence and a way back (no empty
   * skeleton of a page about nothing). */
  function showMissing(main, text, backHref, backLabel) {
    document.title = text + " · tuner";
    main.replaceChildren(el("section", { className: "panel missing", id: "missing" },
      el("h1", null, text + "."),
      el("p", null, el("a", { href: backHref || "/ui", id: "missing-back" },
        "← " + (backLabel || "Back to the experiments")))));
    document.body.dataset.missing = "1";
    document.body.dataset.ready = "1";
  }

  /* Stop a trial by its number, after asking (it stops at its next report). */
  async function stopTrial(experimentId, number) {
    const name = trialName(experimentId, number);
    const ok = await confirmAction("Stop training trial " + name + "?",
      "It stops at its next report and is never promoted again; its results so far are kept.",
      "Stop training");
    if (!ok) return false;
    await api("/api/v1/experiments/" + experimentId + "/trials/" + number + "/stop",
      { method: "POST" });
    return true;
  }

  /* Download an API answer as a file (the token travels in a header, so a plain link
   * cannot carry it). */
  async function download(path, filename) {
    const resp = await fetch(path, { headers: { "Authorization": "Bearer " + token() },
      cache: "no-store" });
    if (!resp.ok) throw new ApiError(resp.status, null, "HTTP " + resp.status);
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  const TRIAL_STATES = ["pending", "running", "paused", "lost", "completed", "stopped",
    "failed", "cancelled"];

  function badge(state) {
    return el("span", { className: "badge state-" + state }, state);
  }

  function setBadge(node, state) {
    const cls = "badge state-" + state;
    if (node.className !== cls) node.className = cls;
    setText(node, state);
  }

/* A stacked bar of trials by state plus its text (shared with the experiment page). */
  function stateBar() {
    const bar = el("div", { className: "statebar", role: "img" });
    const legend = el("div", { className: "legend" });
    return { node: el("div", { className: "states" }, bar, legend), bar, legend };
  }
  
  function fillStateBar(sb, byState) {
    const total = Object.values(byState).reduce((a, b) => a + b, 0);
    const present = TRIAL_STATES.filter((s) => byState[s]);
    const word = (s) => TRIAL_WORDS[s] || s;
    const label = present.map((s) => byState[s] + " " + word(s)).join(", ") || "no trials yet";
    setAttr(sb.bar, "aria-label", label);
    setAttr(sb.bar, "title", label);
    const segs = present.map((s) => {
      const seg = el("span", { className: "seg state-bg-" + s });
      seg.style.width = (100 * byState[s] / total).toFixed(2) + "%";
      return seg;
    });
    const key = present.map((s) => s + byState[s]).join(",");
    if (sb.bar.dataset.key !== key) { sb.bar.dataset.key = key; sb.bar.replaceChildren(...segs); }
    setChildren(sb.legend, present.map((s) =>
      el("span", { className: "chip" }, el("i", { className: "dot state-bg-" + s }),
        byState[s] + " " + word(s))));
  }

  // ---- banner, dialog -----------------------------------------------------------------
  function banner(text, kind) {
    const b = document.getElementById("banner");
    if (!b) return;
    if (!text) { b.hidden = true; setText(b, ""); return; }
    b.className = "banner " + (kind || "error");
    setText(b, text);
    b.hidden = false;
    clearTimeout(b._timer);
    if (kind === "info") b._timer = setTimeout(() => { b.hidden = true; }, 4000);
  }

  /* Ask before acting: the native <dialog> traps focus and closes on Escape. */
  /* `danger`: the confirm button is red (only for what cannot be undone). */
  function confirmAction(title, text, okLabel, danger) {
    const dialog = document.getElementById("confirm");
    setText(document.getElementById("confirm-title"), title);
    setText(document.getElementById("confirm-text"), text);
    const yes = document.getElementById("confirm-yes");
    setText(yes, okLabel || "Confirm");
    yes.className = danger ? "danger" : "";
    const opener = document.activeElement;
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "ok");
        if (opener && opener.focus) opener.focus();
      }, { once: true });
      dialog.showModal();
      document.getElementById("confirm-no").focus();
    });
  }

  /* An admin-only action button; absent for other roles (the API refuses them anyway). */
  function actionButton(label, className, onClick) {
    const b = el("button", { type: "button", className: "action " + (className || "") }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await onClick(); } catch (e) { banner(label + " failed: " + e.message); }
      finally { b.disabled = false; }
    });
    return b;
  }

  // ---- polling ------------------------------------------------------------------------
  /* Call `tick` now and then every POLL_MS after it finishes (never overlapping); errors
   * show in the banner and clear on the next success. Paused while the tab is hidden. */
  function poll(tick) {
    let timer = null;
    async function run() {
      timer = null;
      try {
        await tick();
        const b = document.getElementById("banner");
        if (b && b.dataset.source === "poll") { banner(null); delete b.dataset.source; }
      } catch (e) {
        if (e && e.status === 401) return;
        banner("Could not refresh: " + (e && e.message ? e.message : e));
        document.getElementById("banner").dataset.source = "poll";
      }
      if (!document.hidden) timer = setTimeout(run, POLL_MS);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer === null) run();
    });
    run();
    return { now: () => { if (timer) { clearTimeout(timer); } run(); } };
  }

  // ---- page frame ---------------------------------------------------------------------
  function section(title, id, ...children) {
    return el("section", { className: "panel", id, "aria-labelledby": id + "-h" },
      el("h2", { id: id + "-h" }, title), ...children);
  }

  function tableOf(headers, opts = {}) {
    // opts.cols: one name per column; its header gets the class col-NAME (the rows' cells
    // carry the same class), so the stylesheet can hide minor columns at phone width.
    const cols = opts.cols || [];
    const thead = el("thead", null, el("tr", null,
      ...headers.map((h, i) => el("th", { scope: "col",
        className: cols[i] ? "col-" + cols[i] : "" }, h))));
    const tbody = el("tbody");
    const table = el("table", { className: opts.className || "" },
      opts.caption ? el("caption", { className: "sr-only" }, opts.caption) : null, thead, tbody);
    const wrap = el("div", { className: "table-wrap", tabindex: "0",
      role: "region", "aria-label": opts.caption || "table" }, table);
    return { wrap, table, tbody, thead };
  }

  async function start(init) {
    const main = document.getElementById("main");
    if (!token()) { toLogin(); return; }
    try {
      if (!role()) {
        const me = await api("/ui/api/whoami");
        sessionStorage.setItem(ROLE_KEY, me.role);
      }
    } catch (e) {
      if (e.status !== 401) banner("Could not check the token: " + e.message);
      return;
    }
    const who = document.getElementById("who");
    who.replaceChildren(
      el("span", { className: "role role-" + role() }, role()),
      el("button", { type: "button", className: "link", onclick: logout }, "Log out"));
    main.replaceChildren();
    await init(main);
  }

  /* Plotly (4.8 MB) loads after the page's own script, so that tables fill while it
   * downloads and compiles; the promise resolves once window.Plotly exists. */
  let plotlyPromise = null;
  function plotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyPromise) {
      const src = document.body.dataset.plotly;
      plotlyPromise = new Promise((resolve, reject) => {
        const s = el("script", { src, async: true });
        s.addEventListener("load", () => resolve(window.Plotly));
        s.addEventListener("error", () => reject(new Error("could not load " + src)));
        document.head.append(s);
      });
    }
    return plotlyPromise;
  }

  const plotConfig = { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "sendDataToCloud"] };

  return {
    api, ApiError, el, setText, setAttr, setChildren, patchRows, emptyRow, fmtValue, fmtAge,
    fmtTime, fmtParams, fmtInt, badge, setBadge, banner, confirmAction, actionButton, poll,
    section, tableOf, start, token, role, isAdmin, logout, STATE_COLORS, TRIAL_STATES,
    plotConfig, toMs, stateBar, fillStateBar, plotly, TRIAL_WORDS, trialStatus, setTrialBadge,
    trialName, trialUrl, download, trialByNumber, stopTrial, exists, showMissing,
  };
})();
