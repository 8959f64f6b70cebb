// The QuDAG explorer: one node's view of its network, kept live.
//
// Reads only this node's API, by relative URLs: /api/v1/status, /api/v1/peers,
// /api/v1/dag, /metrics (polled) and /api/v1/stream (Server-Sent Events: the log's tail,
// and DAG events that redraw the DAG at once). No library, no build step; the page's
// script is this file alone.
"use strict";

const POLL_MS = 2000;
const PEERS_POLL_MS = 5000;
const DAG_ROUNDS = 16;
const LOG_TAIL = 15;
const WINDOW_MS = 5 * 60 * 1000; // the charts' span
const RATE_SPAN_MS = 10 * 1000; // a chart point's rate and quantiles cover this long
const STREAM_RETRY_MS = 5000;
const DAG_EVENT_DELAY_MS = 300; // a burst of DAG events from the stream, one redraw
const SVG = "http://www.w3.org/2000/svg";

const state = {
  validators: [], // [{name, node_id}] in genesis order: the DAG's rows
  samples: [], // [{t, length, finality: {count, sum, buckets: [[le, cumulative]]}}]
  logRows: [], // the newest last: {seq, tx_id, vertex, hash}
  lastSeq: 0, // the last log position shown
  stream: null,
  streamStarted: false,
  dagRedraw: null, // the redraw that DAG events asked for, until it runs
};

// ------------------------------------------------------------------ helpers

function $(id) {
  return document.getElementById(id);
}

function short(hex) {
  return hex ? hex.slice(0, 12) : "–";
}

function svg(tag, attributes, parent) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, String(value));
  }
  if (parent) parent.appendChild(element);
  return element;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// Runs `task` now and then every `ms`, never two at once; a failure shows on the page
// and is retried at the next tick.
function every(ms, task) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await task();
      $("node-name").classList.remove("unreachable");
    } catch (error) {
      $("node-name").classList.add("unreachable");
      $("node-name").title = String(error);
    } finally {
      running = false;
    }
  };
  tick();
  setInterval(tick, ms);
}

// --------------------------------------------------------------- the status

async function refreshStatus() {
  const status = await getJson("api/v1/status");
  state.validators = status.network.validators;
  $("node-name").textContent = `${status.node.id} (${status.node.role}, ${status.node.version})`;
  $("network-id").textContent = `${status.network.id}, ${status.network.validators.length} validators`;
  $("round").textContent = status.dag.round;
  $("committed-round").textContent = status.dag.committed_round;
  $("log-length").textContent = status.log.length;
  const quorum = status.p2p.quorum;
  $("quorum").textContent = quorum
    ? `${quorum.validators_linked}/${quorum.needed} ${quorum.can_finalize ? "can finalize" : "cannot finalize"}`
    : "observer";
  $("quorum").className = quorum && !quorum.can_finalize ? "bad" : "";
  $("sync").textContent = status.sync.catching_up ? `catching up (${status.sync.detail})` : "in step";
  $("checkpoint").textContent = status.checkpoint
    ? `#${status.checkpoint.number} at round ${status.checkpoint.round}`
    : "none yet";
  if (!state.streamStarted) {
    state.streamStarted = true;
    const first = Math.max(status.retention.oldest_log_position, status.log.length - LOG_TAIL + 1, 1);
    openStream(first);
  }
  return status;
}

// ------------------------------------------------------------------ the DAG

async function refreshDag() {
  const dag = await getJson(`api/v1/dag?rounds=${DAG_ROUNDS}`);
  drawDag(dag);
}

function drawDag(dag) {
  const picture = $("dag");
  picture.replaceChildren();
  const rows = new Map(state.validators.map((v, i) => [v.node_id, i]));
  const rounds = dag.vertices.map((v) => v.round);
  const high = rounds.length ? Math.max(...rounds) : 0;
  const low = Math.max(1, high - DAG_ROUNDS + 1);
  const left = 70;
  const top = 24;
  const columnWidth = 58;
  const rowHeight = 34;
  const width = left + DAG_ROUNDS * columnWidth;
  const height = top + Math.max(1, state.validators.length) * rowHeight;
  picture.setAttribute("viewBox", `0 0 ${width} ${height}`);
  picture.setAttribute("width", width);
  picture.setAttribute("height", height);

  const x = (round) => left + (round - low) * columnWidth + columnWidth / 2;
  const y = (author) => top + (rows.get(author) ?? 0) * rowHeight + rowHeight / 2;

  state.validators.forEach((v) => {
    const label = svg("text", { x: 4, y: y(v.node_id) + 4, class: "row-label" }, picture);
    label.textContent = v.name;
  });
  for (let round = low; round <= high; round += 1) {
    const label = svg("text", { x: x(round), y: 14, class: "round-label" }, picture);
    label.textContent = round;
  }

  const placed = new Map(dag.vertices.map((v) => [v.id, v]));
  const links = svg("g", { class: "links" }, picture);
  for (const v of dag.vertices) {
    for (const parent of v.parents) {
      const p = placed.get(parent);
      if (!p) continue;
      const recent = v.round > high - 3 ? " recent" : "";
      svg("line", { x1: x(v.round), y1: y(v.author), x2: x(p.round), y2: y(p.author), class: `link${recent}` }, links);
    }
  }

  const leaders = new Set(dag.committed_leaders);
  const nodes = svg("g", { class: "vertices" }, picture);
  for (const v of dag.vertices) {
    const kind = v.ordered ? "ordered" : v.certified ? "certified" : "stored";
    const leader = leaders.has(v.id);
    const anchor = svg("a", { href: `api/v1/vertices/${v.id}`, "data-vertex": v.id }, nodes);
    if (leader) {
      anchor.dataset.leader = "committed";
      svg("circle", { cx: x(v.round), cy: y(v.author), r: 13, class: "leader-ring" }, anchor);
    }
    svg("circle", { cx: x(v.round), cy: y(v.author), r: 8, class: `vertex ${kind}` }, anchor);
    const title = svg("title", {}, anchor);
    const name = state.validators[rows.get(v.author)]?.name ?? short(v.author);
    title.textContent = `round ${v.round} by ${name}: ${v.id}\n${kind}${leader ? ", committed leader" : ""}`;
  }
}

// Redraws the DAG soon after the stream told of a vertex certified or a leader
// committed, rather than at the next poll; a burst of events makes one redraw.
function dagChanged() {
  if (state.dagRedraw !== null) return;
  state.dagRedraw = setTimeout(async () => {
    try {
      await refreshDag();
    } catch {
      // the next poll tries again, and shows the node unreachable if it is
    } finally {
      state.dagRedraw = null;
    }
  }, DAG_EVENT_DELAY_MS);
}

// ----------------------------------------------------- the log, from the stream

// Opens the stream, with the DAG's events, from log position `first`. The browser resumes by itself after a
// lost connection (sending Last-Event-ID); a refusal (a 503 when the node has too many
// subscribers) or a drop for reading too slowly is resumed here, from the next position.
function openStream(first) {
  const stream = new EventSource(`api/v1/stream?from=${first}&events=log,dag`);
  state.stream = stream;
  stream.addEventListener("open", () => setStreamState("live"));
  stream.addEventListener("entries", (event) => addEntries(JSON.parse(event.data)));
  stream.addEventListener("certified", dagChanged);
  stream.addEventListener("committed", dagChanged);
  stream.addEventListener("dropped", (event) => {
    const dropped = JSON.parse(event.data);
    stream.close();
    setStreamState(`dropped (${dropped.code}), resuming`);
    setTimeout(() => openStream(dropped.resume_from), STREAM_RETRY_MS);
  });
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED && state.stream === stream) {
      setStreamState("refused, retrying");
      setTimeout(() => openStream(state.lastSeq ? state.lastSeq + 1 : first), STREAM_RETRY_MS);
    } else {
      setStreamState("reconnecting");
    }
  });
}

function setStreamState(text) {
  const element = $("stream-state");
  element.textContent = text;
  element.className = text === "live" ? "state-live" : "state-connecting";
}

// An "entries" event: a run of one vertex's entries from position `first` on; only the
// last LOG_TAIL of them can show.
function addEntries(run) {
  const count = run.tx_ids.length;
  for (let k = Math.max(0, count - LOG_TAIL); k < count; k++) {
    addLogEntry({ seq: run.first + k, tx_id: run.tx_ids[k], vertex: run.vertex, hash: run.hashes[k] });
  }
}

function addLogEntry(entry) {
  if (entry.seq <= state.lastSeq) return; // already shown
  state.lastSeq = entry.seq;
  state.logRows.push(entry);
  if (state.logRows.length > LOG_TAIL) state.logRows.shift();
  const body = $("log").tBodies[0];
  const row = body.insertRow(0);
  row.dataset.seq = entry.seq;
  row.dataset.tx = entry.tx_id;
  row.className = "fresh";
  cell(row, entry.seq, "number");
  cell(row, short(entry.tx_id), "hex").title = entry.tx_id;
  cell(row, short(entry.vertex), "hex").title = entry.vertex ?? "";
  cell(row, short(entry.hash), "hex").title = entry.hash;
  while (body.rows.length > LOG_TAIL) body.deleteRow(body.rows.length - 1);
}

// ------------------------------------------------------------------ the peers

async function refreshPeers() {
  const { peers } = await getJson("api/v1/peers");
  const body = $("peers").tBodies[0];
  body.replaceChildren();
  for (const peer of peers) {
    const row = body.insertRow();
    row.dataset.state = peer.state;
    cell(row, peer.name ?? "–");
    cell(row, peer.address, "hex");
    cell(row, peer.state, `peer-${peer.state}`).title = peer.last_error ?? "";
    cell(row, peer.role ?? "–");
    cell(row, peer.direction ?? "–");
    const tls = peer.tls ? ` (${peer.tls.version}${peer.tls.group ? `, ${peer.tls.group}` : ""})` : "";
    cell(row, peer.transport ? `${peer.transport}${tls}` : "–");
    cell(row, peer.last_seen_seconds == null ? "–" : `${peer.last_seen_seconds.toFixed(1)} s ago`, "number");
    cell(row, peer.highest_round ?? "–", "number");
    cell(row, peer.log_length ?? "–", "number");
  }
}

// ---------------------------------------------------- throughput and finality

// The samples of the Prometheus text format that `wanted` accepts, as
// [name, labels, value]; comments and other metrics are skipped.
function parseMetrics(text, wanted) {
  const found = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match || !wanted(match[1])) continue;
    const labels = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2];
    }
    found.push([match[1], labels, Number(match[3])]);
  }
  return found;
}

async function sampleMetrics(status) {
  const response = await fetch("metrics", { cache: "no-store" });
  if (!response.ok) throw new Error(`metrics: HTTP ${response.status}`);
  const samples = parseMetrics(await response.text(), (name) => name.startsWith("qudag_finality_seconds"));
  const finality = { count: 0, sum: 0, buckets: [] };
  for (const [name, labels, value] of samples) {
    if (name === "qudag_finality_seconds_count") finality.count = value;
    else if (name === "qudag_finality_seconds_sum") finality.sum = value;
    else if (name === "qudag_finality_seconds_bucket") finality.buckets.push([Number(labels.le), value]);
  }
  finality.buckets.sort((a, b) => a[0] - b[0]);
  const now = Date.now();
  state.samples.push({ t: now, length: status.log.length, finality });
  while (state.samples.length && state.samples[0].t < now - WINDOW_MS - RATE_SPAN_MS) state.samples.shift();
}

// The q-quantile of the observations between two cumulative bucket lists, with
// linear interpolation inside a bucket (as Prometheus's histogram_quantile does).
function quantile(q, before, after) {
  const counts = after.buckets.map(([le, n], i) => [le, n - (before.buckets[i]?.[1] ?? 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of counts) {
    if (cumulative >= rank) {
      if (!Number.isFinite(le)) return lower;
      const inside = cumulative - below;
      return inside > 0 ? lower + ((le - lower) * (rank - below)) / inside : le;
    }
    lower = le;
    below = cumulative;
  }
  return lower;
}

// One point per sample: the rate and quantiles over the RATE_SPAN_MS before it.
function points() {
  const out = [];
  let start = 0;
  for (let i = 1; i < state.samples.length; i += 1) {
    const now = state.samples[i];
    while (start < i - 1 && state.samples[start + 1].t <= now.t - RATE_SPAN_MS) start += 1;
    const then = state.samples[start];
    const seconds = (now.t - then.t) / 1000;
    if (seconds <= 0 || now.length < then.length) continue; // a restart or a new node
    out.push({
      t: now.t,
      tps: (now.length - then.length) / seconds,
      p50: quantile(0.5, then.finality, now.finality),
      p99: quantile(0.99, then.finality, now.finality),
    });
  }
  return out;
}

function drawChart(element, series, unit) {
  element.replaceChildren();
  const width = 600;
  const height = 150;
  const pad = { left: 44, right: 8, top: 10, bottom: 20 };
  element.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const now = Date.now();
  const values = series.flatMap((s) => s.points.map((p) => p[1]));
  const most = Math.max(1e-9, ...values) * 1.1;
  const x = (t) => pad.left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / most) * (height - pad.top - pad.bottom);
  svg("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), class: "axis" }, element);
  svg("line", { x1: pad.left, y1: y(0), x2: pad.left, y2: pad.top, class: "axis" }, element);
  if (values.length) {
    const scale = svg("text", { x: pad.left - 4, y: pad.top + 8, class: "axis-label end" }, element);
    scale.textContent = formatValue(most, unit);
  } else {
    const empty = svg("text", { x: width / 2, y: height / 2, class: "axis-label middle" }, element);
    empty.textContent = "no data yet";
  }
  const past = svg("text", { x: pad.left, y: height - 4, class: "axis-label" }, element);
  past.textContent = "−5 min";
  const present = svg("text", { x: width - pad.right, y: height - 4, class: "axis-label end" }, element);
  present.textContent = "now";
  for (const s of series) {
    const shown = s.points.filter((p) => p[0] >= now - WINDOW_MS);
    if (shown.length < 2) continue;
    const path = shown.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg("path", { d: path, class: `series ${s.className}` }, element);
  }
}

function formatValue(value, unit) {
  if (unit === "s") return value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
  return value.toFixed(value < 10 ? 1 : 0);
}

function drawCharts() {
  const all = points();
  const latest = all[all.length - 1];
  $("tps").textContent = latest ? formatValue(latest.tps, "tx/s") : "–";
  const withLatency = all.filter((p) => p.p50 !== null);
  const recent = withLatency[withLatency.length - 1];
  $("latency").textContent = recent
    ? `${formatValue(recent.p50, "s")} / ${formatValue(recent.p99, "s")}`
    : "no submits here yet";
  drawChart($("tps-chart"), [{ className: "tps", points: all.map((p) => [p.t, p.tps]) }], "tx/s");
  drawChart(
    $("latency-chart"),
    [
      { className: "p50", points: withLatency.map((p) => [p.t, p.p50]) },
      { className: "p99", points: withLatency.map((p) => [p.t, p.p99]) },
    ],
    "s",
  );
}

// ------------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  every(POLL_MS, async () => {
    const status = await refreshStatus();
    await Promise.all([refreshDag(), sampleMetrics(status)]);
    drawCharts();
  });
  every(PEERS_POLL_MS, refreshPeers);
});
