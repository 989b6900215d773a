// The status page: polls /api/status every 2 s and draws it. Read-only; names are inserted as
// text (never as HTML); nothing is loaded from anywhere but this replica.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function fmtLatency(seconds) {
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`;
  return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
}

function statusClass(status) {
  return { READY: "ok", ONLINE: "ok", PAUSED: "warn", NOT_READY: "bad", OFFLINE: "bad" }[status] || "";
}

function fill(tableId, rows, cells) {
  const body = document.querySelector(`#${tableId} tbody`);
  const fresh = document.createElement("tbody");
  for (const row of rows) {
    const tr = el("tr", cells.key(row));
    for (const [field, value, cls] of cells.values(row)) {
      const td = el("td", { "data-field": field }, value === null || value === undefined ? "–" : String(value));
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    fresh.appendChild(tr);
  }
  if (!rows.length) {
    const td = el("td", { colspan: "9", class: "muted" }, "none");
    fresh.appendChild(el("tr")).appendChild(td);
  }
  body.replaceWith(fresh);
}

function render(data) {
  const health = document.getElementById("health");
  const snapshot = data.snapshot;
  health.textContent = data.ready ? (snapshot ? "live" : "waiting for the first snapshot") : "replica not ready";
  health.className = `badge ${data.ready && snapshot ? "ok" : "bad"}`;
  const meta = [`replica ${data.replica}`];
  if (snapshot) meta.push(`snapshot by ${snapshot.computed_by}, ${age(data.snapshot_age)} old`);
  document.getElementById("meta").textContent = meta.join(" · ");
  const pools = snapshot ? snapshot.pools : [];
  fill("pools", pools, {
    key: (p) => ({ "data-pool": p.name }),
    values: (p) => [
      ["name", p.name], ["type", p.type], ["status", p.status, statusClass(p.status)],
      ["paused", p.paused ? "yes" : "no", p.paused ? "warn" : ""], ["limit", p.limit, "num"],
      ["used", p.used, "num"], ["leased", p.leased, "num"], ["online", p.workers.ONLINE || 0, "num"],
    ],
  });
  const queues = pools.flatMap((p) => p.queues.map((q) => ({ pool: p.name, ...q })));
  fill("queues", queues, {
    key: (q) => ({ "data-pool": q.pool, "data-queue": q.name }),
    values: (q) => [
      ["pool", q.pool], ["name", q.name], ["priority", q.priority, "num"],
      ["status", q.status, statusClass(q.status)], ["limit", q.limit, "num"], ["used", q.used, "num"],
      ["due", q.due, "num"], ["late", q.late, q.late ? "num late-some" : "num"],
      ["oldest_due", age(q.oldest_due_age), "num"],
    ],
  });
  fill("workers", snapshot ? snapshot.workers : [], {
    key: (w) => ({ "data-pool": w.pool, "data-worker": w.name }),
    values: (w) => [
      ["pool", w.pool], ["name", w.name], ["status", w.status, statusClass(w.status)],
      ["heartbeat_age", `${age(w.heartbeat_age)} ago`, "num"], ["leases", w.leases, "num"],
    ],
  });
  fill("events", data.events || [], {
    key: () => ({}),
    values: (e) => [
      ["occurred", e.occurred ? new Date(e.occurred).toLocaleTimeString() : null], ["event", e.event],
      ["resource", e.resource],
    ],
  });
  if (data.latency) drawChart(data.latency);
}

function drawChart(latency) {
  const box = document.getElementById("chart");
  const width = Math.max(box.clientWidth, 400), height = 220;
  const left = 56, right = 150, top = 10, bottom = 24;
  const plotW = width - left - right, plotH = height - top - bottom;
  const end = latency.now, start = end - latency.minutes * 60;
  const lo = Math.log10(0.001), hi = Math.log10(1000);
  const x = (t) => left + ((t - start) / (end - start)) * plotW;
  const y = (s) => top + plotH - ((Math.log10(Math.max(s, 0.001)) - lo) / (hi - lo)) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
  for (const tick of [0.001, 0.01, 0.1, 1, 10, 100, 1000]) {
    chart.appendChild(svg("line", { class: "axis", x1: left, x2: left + plotW, y1: y(tick), y2: y(tick) }));
    chart.appendChild(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, latencyLabel(tick)));
  }
  for (let m = 0; m <= latency.minutes; m += 5) {
    const t = end - m * 60;
    chart.appendChild(svg("text", { x: x(t), y: height - 6, "text-anchor": "middle" }, m ? `-${m} min` : "now"));
  }
  const lines = [
    ["handed", "p50", "p50", "handed p50"], ["handed", "p95", "p95", "handed p95"], ["started", "p50", "start", "RUNNING p50"],
  ];
  lines.forEach(([kind, stat, cls, name], index) => {
    const points = latency.series[kind] || [];
    const slot = latency.slot_seconds / 2;
    if (points.length) {
      const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.at + slot).toFixed(1)},${y(p[stat]).toFixed(1)}`).join(" ");
      chart.appendChild(svg("path", { class: cls, d }));
      if (stat === "p50") {
        for (const p of points) {
          const dot = svg("circle", { class: `dot-${cls}`, cx: x(p.at + slot), cy: y(p[stat]), r: 2.5 });
          dot.appendChild(svg("title", {}, `${name}: ${fmtLatency(p[stat])} (${p.count} runs)`));
          chart.appendChild(dot);
        }
      }
    }
    const last = points.length ? ` ${fmtLatency(points[points.length - 1][stat])}` : " –";
    const ly = top + 14 + index * 18;
    chart.appendChild(svg("line", { class: cls, x1: left + plotW + 12, x2: left + plotW + 32, y1: ly - 4, y2: ly - 4 }));
    chart.appendChild(svg("text", { x: left + plotW + 36, y: ly }, `${name}${last}`));
  });
  box.replaceChildren(chart);
}

function latencyLabel(seconds) {
  return seconds < 1 ? `${seconds * 1000} ms` : `${seconds} s`;
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    const health = document.getElementById("health");
    health.textContent = `not reachable (${error.message})`;
    health.className = "badge bad";
  }
}

if (token) document.getElementById("metrics-link").href = "/metrics?token=" + encodeURIComponent(token);
refresh();
setInterval(refresh, 2000);
