// shardnet dashboard: polls /dashboard/api/snapshot and draws it. Every value goes into the page as text
// (textContent and text nodes, never parsed as markup), so a model name or endpoint holding HTML shows as text.
"use strict";

const POLL_MS = 1500;
const SNAPSHOT_URL = "/dashboard/api/snapshot";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "title") node.title = String(value);
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function decimals(w, unitExp, digits) {
  const unit = 10n ** BigInt(unitExp);
  const frac = (w % unit).toString().padStart(unitExp, "0").slice(0, digits).replace(/0+$/, "");
  return frac ? `${w / unit}.${frac}` : `${w / unit}`;
}

// an amount of wei as ETH, gwei or wei, whichever reads best (exact BigInt arithmetic, no float rounding)
function eth(wei) {
  if (wei === null || wei === undefined) return "?";
  const w = BigInt(wei);
  if (w === 0n) return "0";
  if (w < 10n ** 6n) return `${w} wei`;
  if (w < 10n ** 15n) return `${decimals(w, 9, 6)} gwei`;
  return `${decimals(w, 18, 6)} ETH`;
}

function short(addr) {
  const s = String(addr || "");
  return s.length > 14 ? `${s.slice(0, 6)}…${s.slice(-4)}` : s;
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${Number(s).toFixed(s < 10 ? 2 : 0)} s`;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}` }, text);
}

function replaceChildren(id, ...children) {
  document.getElementById(id).replaceChildren(...children);
}

function card(label, value, id) {
  return el("div", { class: "card", "data-total": id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function drawTotals(doc) {
  const t = doc.totals;
  replaceChildren(
    "totals",
    card("jobs", `${t.jobs}`, "jobs"),
    card("settled / failed / cancelled / open", `${t.settled} / ${t.failed} / ${t.cancelled} / ${t.open}`, "closed"),
    card("tokens (settled positions)", `${t.tokens}`, "tokens"),
    card("escrowed", eth(t.escrowed_wei), "escrowed"),
    card("paid (nodes + coordinators)", eth(t.paid_wei), "paid"),
    card("protocol fees", eth(t.protocol_fees_wei), "protocol"),
    card("refunded", eth(t.refunded_wei), "refunded"),
    card("slashes", `${t.slashes} (${eth(t.slashed_wei)})`, "slashes"),
  );
}

function nodeHealth(a) {
  if (!a.chain_ok) return badge("not staked or jailed", "jailed");
  const h = a.health;
  if (!h) return badge("health unknown", "unknown");
  if (h.excluded) return badge("excluded");
  if (h.down) return badge("down");
  return badge("ok");
}

// runs of layers with the same replica count: how a model with more layers than cells is drawn
function runs(counts) {
  const out = [];
  counts.forEach((count, layer) => {
    const last = out[out.length - 1];
    if (last && last.count === count) last.end = layer + 1;
    else out.push({ start: layer, end: layer + 1, count });
  });
  return out;
}

// a model of up to this many layers gets one cell a layer; a larger one (anyone may register a model of 65535
// layers) one cell a run of equal counts, so that no model costs the page more than a few hundred elements
const MAX_LAYER_CELLS = 256;

function drawModel(m) {
  const n = m.num_layers;
  const perLayer = n <= MAX_LAYER_CELLS;
  const cells = perLayer ? m.replicas.map((count, layer) => ({ start: layer, end: layer + 1, count })) : runs(m.replicas);
  const columns = perLayer ? `repeat(${Math.max(n, 1)}, minmax(0, 1fr))` : cells.map((c) => `minmax(0, ${c.end - c.start}fr)`).join(" ");
  const layers = el("div", { class: "layers" });
  layers.style.gridTemplateColumns = columns;
  cells.forEach(({ start, end, count }) => {
    const what = end - start === 1 ? `layer ${start}` : `layers ${start}:${end}`;
    layers.append(el("div", {
      class: count === 0 ? "layer uncovered" : "layer",
      title: `${what}: ${count} serving replica${count === 1 ? "" : "s"}`,
      "data-layer": end - start === 1 ? start : `${start}:${end}`, "data-replicas": count,
    }, `${count}`));
  });
  const box = el("div", { class: "model", "data-model-id": m.model_id, "data-uncovered": m.uncovered.map((r) => r.join(":")).join(",") },
    el("h3", {}, `#${m.model_id} `, el("span", { class: "model-name" }, m.name), ` · ${n} layers · `,
      m.uncovered.length ? el("span", { class: "error" }, `uncovered: ${m.uncovered.map((r) => `${r[0]}:${r[1]}`).join(", ")}`) : "fully covered"),
    el("div", { class: "layers-row" }, el("div", { class: "who muted" }, "replicas per layer"), layers));
  for (const a of m.assignments) {
    const track = el("div", { class: perLayer ? "track" : "track linear" });
    const bar = el("div", { class: "bar", title: `layers ${a.span[0]}:${a.span[1]}` });
    if (perLayer) {
      track.style.gridTemplateColumns = columns;
      bar.style.gridColumn = `${a.span[0] + 1} / ${a.span[1] + 1}`;
    } else {
      bar.style.marginLeft = `${(100 * a.span[0]) / n}%`;
      bar.style.width = `${(100 * (a.span[1] - a.span[0])) / n}%`;
    }
    track.append(bar);
    const h = a.health;
    const step = h && h.step_s !== null ? ` · step ${seconds(h.step_s)}` : "";
    const rtt = h ? ` · rtt ${seconds(h.rtt_s)}` : "";
    box.append(el("div", {
      class: a.serving ? "assignment" : "assignment not-serving",
      "data-span": `${a.span[0]}:${a.span[1]}`, "data-node": a.node, "data-serving": a.serving,
    },
    el("div", { class: "who" }, el("span", { class: "mono", title: a.node }, short(a.node)), ` [${a.span[0]}:${a.span[1]}]`,
      nodeHealth(a), el("br"), el("span", { class: "muted endpoint" }, a.endpoint || "no endpoint"), `${rtt}${step}`),
    track));
  }
  if (!m.assignments.length) box.append(el("p", { class: "error" }, "no live assignment"));
  return box;
}

function nodeState(n) {
  const out = [];
  if (!n.registered) out.push(badge("unregistered", "unknown"));
  if (n.jailed) out.push(badge("jailed"));
  if (BigInt(n.slashed_wei) > 0n) out.push(badge(`slashed ${eth(n.slashed_wei)}`, "slashed"));
  if (BigInt(n.unbonding_wei) > 0n) out.push(badge("unbonding"));
  if (!out.length) out.push(badge("ok"));
  return el("span", {}, ...out);
}

function table(id, head, rows) {
  const thead = el("thead", {}, el("tr", {}, ...head.map(([text, cls]) => el("th", { class: cls }, text))));
  replaceChildren(id, thead, el("tbody", {}, ...rows));
}

function drawNodes(doc) {
  table("nodes", [["node"], ["endpoint", "wide"], ["stake"], ["unbonding", "wide"], ["state"], ["earned"], ["claimable", "wide"], ["live spans", "wide"]],
    doc.nodes.map((n) => el("tr", { "data-node": n.address },
      el("td", { class: "mono", title: n.address }, short(n.address)),
      el("td", { class: "mono wide" }, n.endpoint),
      el("td", {}, eth(n.stake_wei)),
      el("td", { class: "wide" }, BigInt(n.unbonding_wei) > 0n ? `${eth(n.unbonding_wei)} until ${new Date(n.unbonding_until * 1000).toISOString().slice(0, 19)}Z` : "–"),
      el("td", {}, nodeState(n)),
      el("td", {}, eth(n.earned_wei)),
      el("td", { class: "wide" }, eth(n.claimable_wei)),
      el("td", { class: "wide" }, `${n.live_assignments}`))));
}

function drawJobs(doc) {
  const mine = new Map(((doc.coordinator && doc.coordinator.jobs) || []).map((j) => [j.job_id, j]));
  table("jobs", [["job"], ["status"], ["route"], ["tokens"], ["latency"], ["escrow"], ["payout: nodes / coord. / refund", "wide"], ["gas: submit / close tx", "wide"], ["hashes", "wide"]],
    doc.jobs.map((j) => {
      const c = mine.get(j.job_id);
      const route = j.route.length ? j.route : ((c && c.route) || []).map((h) => ({ node: h.node, span: h.span, positions: null, paid_wei: null, how: h.reason }));
      return el("tr", { "data-job-id": j.job_id, "data-status": j.status },
        el("td", {}, `#${j.job_id}`, el("br"), el("span", { class: "muted" }, `model ${j.model_id}`)),
        el("td", {}, badge(j.status), c ? el("span", { class: "muted" }, ` coord.: ${c.status}`) : null,
          j.fail_reason ? el("div", { class: "muted fail-reason" }, j.fail_reason) : null),
        el("td", {}, ...route.map((h) => el("div", { class: "mono" }, `${short(h.node)} [${h.span[0]}:${h.span[1]}]`,
          h.paid_wei !== null ? ` ${eth(h.paid_wei)}` : "", h.how && h.how !== "settled" ? ` (${h.how})` : ""))),
        el("td", {}, j.tokens ? `${j.tokens}` : c && c.output_token_count !== null ? `${c.output_token_count} out` : "–"),
        el("td", {}, j.latency_s !== null ? `${j.latency_s} s (chain)` : "–", c && c.latency_s !== null ? el("div", { class: "muted" }, `${seconds(c.latency_s)} (coord.)`) : null),
        el("td", {}, eth(j.escrow_wei)),
        el("td", { class: "wide" }, `${eth(j.paid_to_nodes_wei)} / ${eth(j.coordinator_fee_wei)} / ${eth(j.refund_wei)}`),
        el("td", { class: "wide" }, `${j.gas_submit ?? "–"} / ${j.gas_close_tx ?? "–"}${j.close_batch > 1 ? ` (batch of ${j.close_batch})` : ""}`),
        el("td", { class: "mono wide" }, el("div", { title: j.input_hash }, `in ${short(j.input_hash)}`),
          j.output_hash ? el("div", { title: j.output_hash }, `out ${short(j.output_hash)}`) : null));
    }));
}

function drawChart(series) {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  const height = canvas.clientHeight || 160;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const pad = { l: 36, r: 30, t: 10, b: 18 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const n = series.jobs.length;
  const maxJobs = Math.max(1, ...series.jobs);
  const maxTps = Math.max(0.001, ...series.tokens_per_s);
  const slot = w / Math.max(n, 1);
  g.fillStyle = "#d98200";
  series.jobs.forEach((v, i) => {
    const bh = (v / maxJobs) * h;
    g.fillRect(pad.l + i * slot + slot * 0.2, pad.t + h - bh, slot * 0.6, bh);
  });
  g.strokeStyle = "#3d6fb6";
  g.lineWidth = 2;
  g.beginPath();
  series.tokens_per_s.forEach((v, i) => {
    const x = pad.l + i * slot + slot / 2;
    const y = pad.t + h - (v / maxTps) * h;
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#6b6f76";
  g.font = "11px system-ui, sans-serif";
  g.fillText(`${maxTps.toFixed(2)} tok/s`, 2, pad.t + 8);
  g.fillText(`${maxJobs} jobs`, width - pad.r + 2, pad.t + 8);
  g.fillText("-60 min", pad.l, height - 4);
  g.fillText("now", width - pad.r - 20, height - 4);
  g.strokeStyle = "#d9dbde";
  g.lineWidth = 1;
  g.strokeRect(pad.l, pad.t, w, h);
}

function draw(doc) {
  const c = doc.chain;
  const parts = [`registry ${c.registry}`, `block ${c.head}`, doc.source === "coordinator" ? `coordinator ${doc.coordinator.address}` : "chain only (no coordinator: no health)"];
  if (c.syncing) parts.push(`catching up (read to block ${c.synced_to})`);
  const status = document.getElementById("status");
  status.textContent = parts.join(" · ");
  status.classList.toggle("error", Boolean(c.error));
  if (c.error) status.textContent += ` · chain error: ${c.error}`;
  document.getElementById("source-note").textContent = doc.source === "coordinator" ? " and this coordinator's own state" : "";
  drawTotals(doc);
  drawChart(doc.series);
  replaceChildren("models", ...doc.models.map(drawModel));
  if (!doc.models.length) replaceChildren("models", el("p", { class: "muted" }, "no model registered"));
  drawNodes(doc);
  drawJobs(doc);
  document.body.setAttribute("data-ready", "true");
  document.body.setAttribute("data-head", String(c.head));
}

async function poll() {
  try {
    const response = await fetch(SNAPSHOT_URL, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`snapshot answered ${response.status}`);
    draw(await response.json());
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = `cannot read the snapshot (${err.message}); retrying`;
    status.classList.add("error");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
