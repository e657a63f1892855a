// tollway dashboard: polls /api/status every 2 s and /api/chart every 10 s, draws SVG charts.
// Everything from the daemon (some of it from neighbors) is set as text, never as HTML.
"use strict";
(function () {
  const STATUS_EVERY_MS = 2000, HISTORY_EVERY_MS = 10000, HOUR_MS = 3600000, MINUTE_MS = 60000;
  const COLORS = ["#2b7bb9", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#16a085", "#7f8c8d", "#c0392b"];
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("tollway-token");
  let status = null, history = false, lastBytes = new Map(), rates = new Map();

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }
  async function api(path, init) {
    const r = await fetch(path, Object.assign({ cache: "no-store", credentials: "omit" }, init || {}, { headers: headers((init || {}).headers) }));
    if (r.status === 401) {
      const t = window.prompt("This node's dashboard needs its token ([http] token):");
      if (t) { token = t; sessionStorage.setItem("tollway-token", t); }
      throw new Error("token required");
    }
    const text = await r.text();
    if (!r.ok) throw new Error(text.trim() || r.statusText);
    return JSON.parse(text);
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  const short = (id) => (id || "").slice(0, 8);
  const num = (s) => { const v = parseFloat(s); return isFinite(v) ? v : 0; };
  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + (s % 60) + "s";
  }
  function bits(v) {
    const u = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"]; let i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return (i ? v.toFixed(1) : Math.round(v)) + " " + u[i];
  }
  function message(text, bad) { const m = $("message"); m.textContent = text; m.className = bad ? "bad" : "good"; }

  function colorOf(id) {
    const ids = (status ? status.neighbors.map((n) => n.id) : []).sort();
    const i = Math.max(0, ids.indexOf(id));
    return COLORS[i % COLORS.length];
  }

  function renderNode(s) {
    const n = s.node, m = n.market;
    $("node-id").textContent = short(n.id) + "…"; $("node-id").title = n.id;
    $("node-ip").textContent = n.mesh_ip;
    $("node-uptime").textContent = duration(n.uptime_secs);
    $("node-ask").textContent = m.ask + " " + m.currency;
    $("node-bid").textContent = m.bid_policy === "ask" ? "their ask" : m.bid_policy + " " + m.currency;
    $("node-max").textContent = m.max_price + " " + m.currency;
    $("node-payments").textContent = m.payments_paused ? "paused" : "running";
    $("pause").textContent = m.payments_paused ? "Resume payments" : "Pause payments";
    $("currency").textContent = "(" + m.currency + " per MB)";
    $("overrides").textContent = m.overrides.length ? "Set at run time, overriding the config: " + m.overrides.join("; ") : "";
    const ask = $("ask"), bid = $("bid");
    if (document.activeElement !== ask && !ask.dataset.dirty) ask.value = m.ask;
    if (document.activeElement !== bid && !bid.dataset.dirty) bid.value = m.bid_policy;
  }

  function renderNeighbors(s, now) {
    const body = $("neighbors").tBodies[0];
    body.replaceChildren();
    for (const n of s.neighbors) {
      const prev = lastBytes.get(n.id);
      if (prev && now > prev.t) {
        const dt = (now - prev.t) / 1000;
        rates.set(n.id, { in: Math.max(0, n.bytes_in - prev.in) * 8 / dt, out: Math.max(0, n.bytes_out - prev.out) * 8 / dt });
      }
      lastBytes.set(n.id, { t: now, in: n.bytes_in, out: n.bytes_out });
      const r = rates.get(n.id);
      const tr = el("tr", null, "neighbor"); tr.dataset.id = n.id;
      const idCell = el("td"); const sw = el("span", "■", "swatch"); sw.style.color = colorOf(n.id);
      idCell.append(sw, " " + short(n.id)); idCell.title = n.id + " (" + n.interface + ", " + n.mesh_ip + ")";
      tr.append(idCell, el("td", n.state), el("td", n.ask ?? "—"), el("td", n.bid ?? "declined"), el("td", n.their_bid ?? "—"));
      const bal = el("td", n.balance, num(n.balance) < 0 ? "neg" : ""); tr.append(bal);
      tr.append(el("td", n.paid_total), el("td", n.received_total), el("td", r ? bits(r.in) : "…", "rate-in"), el("td", r ? bits(r.out) : "…", "rate-out"));
      const enf = el("td", n.enforcement + (n.enforcement_reason ? ": " + n.enforcement_reason : ""), n.enforcement === "none" ? "" : "bad");
      if (n.negotiation !== "agreed") enf.append(el("div", n.negotiation, "muted"));
      tr.append(enf);
      const q = n.quality;
      tr.append(el("td", q ? qualityText(q) : "not measured", q ? "" : "muted"));
      body.append(tr);
    }
    if (!s.neighbors.length) { const tr = el("tr"); const td = el("td", "no neighbors yet", "muted"); td.colSpan = 12; tr.append(td); body.append(tr); }
  }

  function qualityText(q) {
    const ms = (us) => (us / 1000).toFixed(1) + " ms";
    let t = "RTT " + ms(q.rtt_us) + " (min " + ms(q.rtt_min_us) + ", " + q.rtt_samples + " samples)";
    if (q.loss_ppm) t += ", loss " + (q.loss_ppm / 10000).toFixed(2) + " %";
    if (q.live_peak_down_kbit != null) t += "; live peak " + (q.live_peak_down_kbit / 1000).toFixed(1) + " down, " + (q.live_peak_up_kbit / 1000).toFixed(1) + " up Mbit/s";
    if (q.tests) t += "; tested " + q.tests + "×: " + (q.down_kbit / 1000).toFixed(1) + " down, " + (q.up_kbit / 1000).toFixed(1) + " up Mbit/s";
    if (q.verdict && q.verdict !== "unknown") t += "; " + q.verdict + (q.reason ? ": " + q.reason : "");
    return t;
  }

  function renderRoutes(s) {
    const body = $("routes").tBodies[0];
    body.replaceChildren();
    for (const r of s.routes) {
      const tr = el("tr", null, r.installed ? "route" : "route muted");
      tr.append(el("td", r.prefix), el("td", r.via ? short(r.via) + " (" + (r.interface || "") + ")" : (r.interface || "local")),
        el("td", r.metric), el("td", r.installed ? "yes" : "no"), el("td", r.source));
      body.append(tr);
    }
    const p = $("problems"); p.replaceChildren();
    for (const x of s.routing.problems) p.append(el("li", x, "bad"));
  }

  // One SVG line chart: series = [{id, color, points: [[t, v], ...]}], over the last hour.
  function chart(svg, series, fmt) {
    const W = 600, H = 180, L = 64, R = 8, T = 8, B = 22, now = Date.now(), t0 = now - HOUR_MS;
    const NS = "http://www.w3.org/2000/svg";
    const mk = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; };
    let lo = 0, hi = 0;
    for (const s of series) for (const [, v] of s.points) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi === lo) hi = lo + 1;
    const x = (t) => L + (W - L - R) * (t - t0) / HOUR_MS, y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    svg.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      svg.append(mk("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }), mk("text", { x: L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
    }
    for (const m of [60, 45, 30, 15, 0]) svg.append(mk("text", { x: x(now - m * MINUTE_MS), y: H - 6, class: "axis", "text-anchor": "middle" }, m ? "-" + m + "m" : "now"));
    let drawn = 0;
    for (const s of series) {
      const pts = s.points.filter(([t]) => t >= t0).sort((a, b) => a[0] - b[0]);
      if (!pts.length) continue;
      const d = pts.map(([t, v], i) => (i ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      const path = mk("path", { d: d, class: "series", stroke: s.color, "data-neighbor": s.id, "data-points": pts.length });
      path.append(mk("title", {}, s.id));
      svg.append(path);
      if (pts.length === 1) svg.append(mk("circle", { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, fill: s.color, class: "series-dot" }));
      drawn += pts.length;
    }
    svg.dataset.points = drawn;
    if (!drawn) svg.append(mk("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no history yet"));
  }

  // The charts' data: minute start -> {neighbor id -> figures}, merged from /api/chart (the
  // whole hour once, then the last two minutes at each poll).
  const minutes = new Map();
  function merge(c) {
    c.minutes.forEach((t, i) => {
      const row = new Map();
      for (const s of c.neighbors) {
        row.set(s.id, { in: s.bytes_in[i], out: s.bytes_out[i], earned: s.earned[i], spent: s.spent[i],
          balance: s.balance.length ? s.balance[i] : null });
      }
      minutes.set(t, row);
    });
    const cutoff = Date.now() - HOUR_MS - 2 * MINUTE_MS;
    for (const t of [...minutes.keys()]) if (t < cutoff) minutes.delete(t);
  }

  function renderCharts() {
    if (!history || !status) return;
    const keys = [...minutes.keys()].sort((a, b) => a - b);
    const ids = new Set();
    for (const row of minutes.values()) for (const id of row.keys()) ids.add(id);
    const minuteNow = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS;
    // Bytes over a minute as bit/s at the minute's middle (the current minute: over the part elapsed).
    const rate = (t, b) => b * 8 / (t === minuteNow ? Math.max(1, (Date.now() - t) / 1000) : 60);
    const inS = [], outS = [], balS = [];
    for (const id of ids) {
      const color = colorOf(id), pin = [], pout = [], pbal = [];
      for (const t of keys) {
        const e = minutes.get(t).get(id);
        if (!e) continue;
        if (e.in || e.out || pin.length) { pin.push([t + MINUTE_MS / 2, rate(t, e.in)]); pout.push([t + MINUTE_MS / 2, rate(t, e.out)]); }
        if (e.balance !== null) pbal.push([Math.min(t + MINUTE_MS, Date.now()), e.balance]);
      }
      inS.push({ id, color, points: pin }); outS.push({ id, color, points: pout }); balS.push({ id, color, points: pbal });
    }
    let earned = 0, spent = 0; const ePts = [], sPts = [];
    for (const t of keys) {
      for (const e of minutes.get(t).values()) { earned += e.earned; spent += e.spent; }
      const at = Math.min(t + MINUTE_MS, Date.now());
      ePts.push([at, earned]); sPts.push([at, spent]);
    }
    const money = (v) => v.toPrecision(3);
    chart($("chart-in"), inS, bits);
    chart($("chart-out"), outS, bits);
    chart($("chart-balance"), balS, money);
    chart($("chart-money"), [{ id: "earned", color: "#5cb85c", points: ePts }, { id: "spent", color: "#d9534f", points: sPts }], money);
    const legend = $("legend"); legend.replaceChildren();
    for (const id of ids) { const s = el("span", "■ ", "swatch"); s.style.color = colorOf(id); const w = el("span"); w.append(s, short(id) + "  "); legend.append(w); }
    const e = el("span", "■ ", "swatch"); e.style.color = "#5cb85c"; const sp = el("span", "■ ", "swatch"); sp.style.color = "#d9534f";
    legend.append(el("br"), e, "earned  ", sp, "spent");
  }

  async function pollStatus() {
    try {
      status = await api("/api/status");
      const now = Date.now();
      renderNode(status); renderNeighbors(status, now); renderRoutes(status);
      $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
      $("updated").className = "muted";
      if (history) renderCharts();
    } catch (e) {
      $("updated").textContent = "cannot reach the daemon: " + e.message;
      $("updated").className = "bad";
    }
  }
  async function pollHistory() {
    try {
      const since = history ? Date.now() - 2 * MINUTE_MS : Date.now() - HOUR_MS;
      merge(await api("/api/chart?since_ms=" + since));
      history = true;
      renderCharts();
    } catch (e) { /* shown by the status poll */ }
  }

  async function change(path, body, done) {
    try {
      await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      message(done, false);
      $("ask").dataset.dirty = ""; $("bid").dataset.dirty = "";
      await pollStatus();
    } catch (e) { message("Not changed: " + e.message, true); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["ask", "bid"]) $(id).addEventListener("input", () => { $(id).dataset.dirty = "1"; });
    $("price-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = {}, m = status && status.node.market;
      const ask = $("ask").value.trim(), bid = $("bid").value.trim();
      if (ask && (!m || ask !== m.ask)) body.ask = ask;
      if (bid && (!m || bid !== m.bid_policy)) body.bid = bid;
      if (!Object.keys(body).length) { message("Nothing to change.", false); return; }
      change("/api/price", body, "Prices changed (stored; they survive a restart).");
    });
    $("pause").addEventListener("click", () => {
      const paused = !(status && status.node.market.payments_paused);
      change("/api/payments", { paused }, paused ? "Payments paused." : "Payments resumed.");
    });
    $("reset").addEventListener("click", () => change("/api/price/reset", {}, "Back to the config file's settings."));
    pollStatus().then(pollHistory);
    setInterval(pollStatus, STATUS_EVERY_MS);
    setInterval(pollHistory, HISTORY_EVERY_MS);
  });
})();
