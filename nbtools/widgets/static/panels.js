// nbtools widgets — one pure renderer per panel: (data, opts) -> Element.
// The same renderers draw the Explorer's panels and the standalone widgets.

/** Prompt tokens as buttons. data: {tokens, selected, next?}; opts.onClick(pos, evt). */
function renderTokens(data, opts = {}) {
  const tokens = data.tokens || [];
  const sel = data.selected < 0 ? tokens.length - 1 : data.selected;
  return h("div", { class: "nbx-tokens", role: "listbox", "aria-label": "prompt tokens" },
    tokens.map((t, i) => {
      const cls = ["nbx-tok"];
      if (i === sel) cls.push("nbx-tok-sel");
      if (data.next && i === sel + 1) cls.push("nbx-tok-next");
      return h("button", {
        class: cls.join(" "), "data-pos": i, title: `position ${i}: ${JSON.stringify(t)}`,
        role: "option", "aria-selected": i === sel ? "true" : "false",
        onclick: (e) => opts.onClick && opts.onClick(i, e),
      }, h("span", { class: "nbx-tok-text" }, tokText(t)), h("sub", { class: "nbx-tok-pos" }, String(i)));
    }));
}

/** Name of a grid cell. */
const headName = (l, hd) => `L${l}H${hd}`;

/** Layers × heads heat map with an MLP column and clickable layer labels.
 *  data: {values [L][H], mlp [L] | null, selected [names], legend, vmax?, dim?}
 *  opts: {onClick(name, additive, evt), tip, tips(kind, l, h) -> lines, exclude(name) -> bool} */
function renderGrid(data, opts = {}) {
  const values = data.values || [];
  const L = values.length, H = L ? values[0].length : 0;
  const mlp = data.mlp || null;
  const selected = new Set(data.selected || []);
  const cell = Math.max(11, Math.min(34, Math.floor(Math.min(440 / Math.max(H, 1), 360 / Math.max(L, 1)))));
  const gap = 2, left = 40, top = 20, mlpGap = 14;
  const gridW = H * (cell + gap), width = left + gridW + (mlp ? mlpGap + cell + 4 : 0) + 6;
  const height = top + L * (cell + gap) + 4;
  const isAblated = (l, hd) => selected.has(headName(l, hd)) || selected.has(`attn${l}`);
  const excluded = (name, l, hd) => opts.exclude && opts.exclude(name, l, hd);
  // colour scale: the heads' range (MLP layers often dwarf single heads; their cells clip)
  let vmax = data.vmax;
  if (!(vmax > 0)) {
    const heads = [], mlps = [];
    values.forEach((row, l) => row.forEach((v, hd) => { if (!excluded(headName(l, hd), l, hd)) heads.push(v); }));
    (mlp || []).forEach((v, l) => { if (!excluded(`mlp${l}`, l, null)) mlps.push(v); });
    vmax = absMax(heads) || absMax(mlps) || 1;
  }
  const clipped = (mlp || []).some((v, l) => v !== null && Math.abs(v) > vmax * 1.0001 && !excluded(`mlp${l}`, l, null));
  const click = (name) => (e) => opts.onClick && opts.onClick(name, e.shiftKey || e.metaKey || e.ctrlKey, e);
  const tipLines = (kind, l, hd, v) => () => (opts.tips ? opts.tips(kind, l, hd) : [kind === "head" ? headName(l, hd) : kind === "mlp" ? `MLP ${l}` : `attention layer ${l}`, `value ${fmt(v, 4)}`]);
  const svg = s("svg", { class: "nbx-grid" + (data.dim ? " nbx-dim" : ""), width, height, viewBox: `0 0 ${width} ${height}`, role: "grid" });
  const step = Math.ceil(H / Math.max(1, Math.floor(gridW / 22)));
  for (let hd = 0; hd < H; hd += step) {
    svg.append(s("text", { class: "nbx-axis", x: left + hd * (cell + gap) + cell / 2, y: top - 6, "text-anchor": "middle" }, `H${hd}`));
  }
  if (mlp) svg.append(s("text", { class: "nbx-axis nbx-axis-strong", x: left + gridW + mlpGap + cell / 2, y: top - 6, "text-anchor": "middle" }, "MLP"));
  for (let l = 0; l < L; l++) {
    const y = top + l * (cell + gap);
    const attnSel = selected.has(`attn${l}`);
    const lab = s("text", {
      class: "nbx-layer" + (attnSel ? " nbx-layer-sel" : ""), x: left - 8, y: y + cell / 2 + 4, "text-anchor": "end",
      "data-name": `attn${l}`, onclick: click(`attn${l}`),
    }, `L${l}`);
    hover(lab, opts.tip, tipLines("attn", l, null));
    svg.append(lab);
    for (let hd = 0; hd < H; hd++) {
      const v = values[l][hd], name = headName(l, hd);
      const ex = excluded(name, l, hd);
      const col = ex ? [225, 225, 225] : divergingRGB(v, vmax);
      const x = left + hd * (cell + gap);
      const r = s("rect", {
        class: "nbx-cell" + (isAblated(l, hd) ? " nbx-cell-abl" : ""), x, y, width: cell, height: cell, rx: 3,
        fill: rgb(col), "data-name": name, "data-value": v, onclick: click(name),
      });
      hover(r, opts.tip, tipLines("head", l, hd, v));
      svg.append(r);
      if (isAblated(l, hd)) svg.append(crossMark(x, y, cell, inkFor(col)));
    }
    if (mlp) {
      const v = mlp[l], name = `mlp${l}`, x = left + gridW + mlpGap;
      const ex = excluded(name, l, null);
      const col = ex ? [225, 225, 225] : divergingRGB(v, vmax);
      const sel = selected.has(name);
      const r = s("rect", {
        class: "nbx-cell nbx-mlp" + (sel ? " nbx-cell-abl" : ""), x, y, width: cell, height: cell, rx: 3,
        fill: rgb(col), "data-name": name, "data-value": v, onclick: click(name),
      });
      hover(r, opts.tip, tipLines("mlp", l, null, v));
      svg.append(r);
      if (sel) svg.append(crossMark(x, y, cell, inkFor(col)));
    }
  }
  return h("div", { class: "nbx-grid-wrap" }, svg, legendBar(vmax, (data.legend || "value") + (clipped ? " \u00b7 MLP cells clipped" : "")));
}

function crossMark(x, y, c, ink) {
  const p = c * 0.3;
  return s("path", { class: "nbx-cross", d: `M${x + p},${y + p}L${x + c - p},${y + c - p}M${x + c - p},${y + p}L${x + p},${y + c - p}`, stroke: ink });
}

/** Horizontal colour bar for a symmetric diverging scale, with a caption below. */
function legendBar(vmax, label) {
  const w = 180, hgt = 8, n = 24;
  const svg = s("svg", { class: "nbx-legend-bar", width: w + 70, height: 13 });
  for (let i = 0; i < n; i++) {
    const v = -vmax + (2 * vmax * (i + 0.5)) / n;
    svg.append(s("rect", { x: 35 + (i * w) / n, y: 2, width: w / n + 0.5, height: hgt, fill: rgb(divergingRGB(v, vmax)) }));
  }
  svg.append(s("text", { class: "nbx-axis", x: 31, y: 10, "text-anchor": "end" }, fmt(-vmax, 2)));
  svg.append(s("text", { class: "nbx-axis", x: 39 + w, y: 10 }, fmt(vmax, 2)));
  return h("div", { class: "nbx-legend" }, svg, h("div", { class: "nbx-legend-label" }, label));
}

/** Target logit and probability, clean → ablated. data: logit_data(). */
function renderLogit(data) {
  const d = data || {};
  const delta = d.delta;
  const badge = (delta === null || delta === undefined) ? null
    : h("span", { class: "nbx-badge " + (delta < 0 ? "nbx-neg" : "nbx-pos"), "data-nb": "logit-delta", "data-value": delta }, `ΔL ${fmt(delta, 3)}`);
  const arrow = h("span", { class: "nbx-arrow" }, "\u2192");
  return h("div", { class: "nbx-logit" },
    h("div", { class: "nbx-logit-target" }, "target ",
      h("code", { class: "nbx-token", "data-nb": "target-token" }, tokText(d.token)),
      h("span", { class: "nbx-muted" }, ` id ${d.id ?? "?"}`)),
    h("div", { class: "nbx-logit-row" },
      h("span", { class: "nbx-label" }, d.centred === false ? "logit" : "logit (centred)"),
      h("span", { class: "nbx-num", "data-nb": "logit-clean", "data-value": d.clean }, fmt(d.clean, 3)), arrow.cloneNode(true),
      h("span", { class: "nbx-num nbx-strong", "data-nb": "logit-ablated", "data-value": d.ablated }, fmt(d.ablated, 3)), badge),
    h("div", { class: "nbx-logit-row" },
      h("span", { class: "nbx-label" }, "probability"),
      h("span", { class: "nbx-num", "data-nb": "p-clean", "data-value": d.p_clean }, fmtP(d.p_clean)), arrow.cloneNode(true),
      h("span", { class: "nbx-num nbx-strong", "data-nb": "p-ablated", "data-value": d.p_ablated }, fmtP(d.p_ablated)),
      probBars(d.p_clean, d.p_ablated)));
}

function probBars(p0, p1) {
  if (p0 === null || p0 === undefined) return null;
  const w = 90;
  return s("svg", { class: "nbx-pbars", width: w, height: 14 },
    s("rect", { x: 0, y: 1, width: w, height: 5, class: "nbx-track" }),
    s("rect", { x: 0, y: 1, width: Math.max(1, w * p0), height: 5, class: "nbx-bar-clean" }),
    s("rect", { x: 0, y: 8, width: w, height: 5, class: "nbx-track" }),
    s("rect", { x: 0, y: 8, width: Math.max(1, w * (p1 || 0)), height: 5, class: "nbx-bar-abl" }));
}

/** Self-repair waterfall. data: waterfall_data() ({steps: [{key, label, value, total}]}). */
function renderWaterfall(data, opts = {}) {
  const steps = (data && data.steps) || [];
  const W = opts.width || 460, Hh = opts.height || 200, padL = 46, padR = 8, padT = 20, padB = 40;
  let run = 0;
  const bars = steps.map((st) => {
    const v = st.value ?? 0;
    const from = st.total ? 0 : run, to = st.total ? v : run + v;
    if (!st.total) run += v;
    return { ...st, from, to, v };
  });
  const lo = Math.min(0, ...bars.map((b) => Math.min(b.from, b.to)));
  const hi = Math.max(0, ...bars.map((b) => Math.max(b.from, b.to)));
  const span = hi - lo || 1, pad = span * 0.12;
  const y = (v) => padT + ((hi + pad - v) / (span + 2 * pad)) * (Hh - padT - padB);
  const bw = (W - padL - padR) / Math.max(1, bars.length);
  const svg = s("svg", { class: "nbx-waterfall nbx-fluid", viewBox: `0 0 ${W} ${Hh}`, style: { maxWidth: W + "px" } });
  for (const t of ticks(lo - pad, hi + pad, 4)) {
    svg.append(s("line", { class: "nbx-gridline", x1: padL, x2: W - padR, y1: y(t), y2: y(t) }));
    svg.append(s("text", { class: "nbx-axis", x: padL - 5, y: y(t) + 3, "text-anchor": "end" }, fmt(t, 2, false)));
  }
  svg.append(s("line", { class: "nbx-zero", x1: padL, x2: W - padR, y1: y(0), y2: y(0) }));
  bars.forEach((b, i) => {
    const x = padL + i * bw + bw * 0.18, w = bw * 0.64;
    const top = y(Math.max(b.from, b.to)), bot = y(Math.min(b.from, b.to));
    const cls = b.total ? "nbx-wf-total" : b.v < 0 ? "nbx-wf-neg" : "nbx-wf-pos";
    svg.append(s("rect", { class: cls, x, y: top, width: w, height: Math.max(1, bot - top), rx: 2, "data-nb": `wf-${b.key}`, "data-value": b.value },
      s("title", null, `${b.label}: ${fmt(b.value, 4)} logits`)));
    if (i < bars.length - 1 && !bars[i + 1].total) {
      svg.append(s("line", { class: "nbx-wf-link", x1: x + w, x2: x + bw, y1: y(b.to), y2: y(b.to) }));
    }
    const above = b.v >= 0;
    svg.append(s("text", { class: "nbx-val", x: x + w / 2, y: above ? top - 4 : bot + 11, "text-anchor": "middle" }, fmt(b.value, 3)));
    const words = b.label.split(" ");
    const mid = Math.ceil(words.length / 2);
    const lines = words.length > 1 ? [words.slice(0, mid).join(" "), words.slice(mid).join(" ")] : [b.label];
    lines.forEach((ln, k) => svg.append(s("text", { class: "nbx-axis", x: x + w / 2, y: Hh - padB + 14 + k * 11, "text-anchor": "middle" }, ln)));
  });
  return svg;
}

/** Final-norm gauge. data: gauge_data() ({s_clean, s_ablated, ratio, sr_ln}). */
function renderGauge(data) {
  const d = data || {};
  const W = 230, Hh = 142, cx = W / 2, cy = 100, R = 74;
  const r = d.ratio ?? 1;
  const dev = Math.abs(r - 1);
  const half = [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5].find((k) => k >= dev * 1.15) || Math.ceil(dev * 1.2);
  const lo = Math.max(0, 1 - half), hi = 1 + half;
  const ang = (v) => Math.PI * (1 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo));
  const pt = (a, rr) => [cx + rr * Math.cos(a), cy - rr * Math.sin(a)];
  const arc = (a0, a1, rr) => { const [x0, y0] = pt(a0, rr), [x1, y1] = pt(a1, rr); return `M${x0},${y0}A${rr},${rr} 0 0 1 ${x1},${y1}`; };
  const svg = s("svg", { class: "nbx-gauge", width: W, height: Hh, viewBox: `0 0 ${W} ${Hh}` },
    s("path", { class: "nbx-gauge-lo", d: arc(Math.PI, Math.PI / 2, R) }),
    s("path", { class: "nbx-gauge-hi", d: arc(Math.PI / 2, 0, R) }));
  const digits = half < 0.05 ? 3 : 2;
  for (const v of [lo, 1, hi]) {
    const [x0, y0] = pt(ang(v), R - 7), [x1, y1] = pt(ang(v), R + 7);
    svg.append(s("line", { class: "nbx-gauge-tick", x1: x0, y1: y0, x2: x1, y2: y1 }));
    const [tx, ty] = v === 1 ? pt(ang(v), R + 16) : [cx + (v < 1 ? -R : R), cy + 14];
    svg.append(s("text", { class: "nbx-axis", x: tx, y: ty + 3, "text-anchor": "middle" }, "\u00d7" + v.toFixed(digits)));
  }
  svg.append(s("text", { class: "nbx-axis", x: cx - R + 6, y: cy - R + 6, "text-anchor": "middle" }, "shrinks"));
  svg.append(s("text", { class: "nbx-axis", x: cx + R - 6, y: cy - R + 6, "text-anchor": "middle" }, "boosts"));
  const [nx, ny] = pt(ang(r), R - 12);
  svg.append(s("line", { class: "nbx-needle", x1: cx, y1: cy, x2: nx, y2: ny }));
  svg.append(s("circle", { class: "nbx-needle-hub", cx, cy, r: 4 }));
  svg.append(s("text", { class: "nbx-gauge-val", x: cx, y: cy + 32, "text-anchor": "middle", "data-nb": "gauge-ratio", "data-value": d.ratio }, "s/s\u2032 = \u00d7" + r.toFixed(4)));
  const fact = (label, key, value, digits_, signed, strong) => h("div", null, h("span", { class: "nbx-label" }, label),
    h("span", { class: "nbx-num" + (strong ? " nbx-strong" : ""), "data-nb": key, "data-value": value }, fmt(value, digits_, signed)));
  return h("div", { class: "nbx-gauge-wrap" }, svg,
    h("div", { class: "nbx-gauge-facts" },
      fact("clean scale s", "s-clean", d.s_clean, 4, false),
      fact("ablated scale s\u2032", "s-ablated", d.s_ablated, 4, false),
      h("div", { class: "nbx-gauge-ln" }, h("span", { class: "nbx-label" }, "logit change from the norm alone"),
        h("span", { class: "nbx-num nbx-strong", "data-nb": "gauge-sr-ln", "data-value": d.sr_ln }, fmt(d.sr_ln, 4)))));
}

/** Sorted-values sparkline. */
function sparkline(values, W = 250, Hh = 34) {
  const n = values.length;
  const svg = s("svg", { class: "nbx-spark", width: W, height: Hh });
  if (!n) return svg;
  const lo = Math.min(0, ...values), hi = Math.max(0, ...values), span = hi - lo || 1;
  const y = (v) => 2 + ((hi - v) / span) * (Hh - 4);
  const x = (i) => (i / Math.max(1, n - 1)) * (W - 2) + 1;
  svg.append(s("line", { class: "nbx-zero", x1: 0, x2: W, y1: y(0), y2: y(0) }));
  const area = `M${x(0)},${y(0)}` + values.map((v, i) => `L${x(i)},${y(v)}`).join("") + `L${x(n - 1)},${y(0)}Z`;
  svg.append(s("path", { class: "nbx-spark-area", d: area }));
  svg.append(s("path", { class: "nbx-spark-line", d: values.map((v, i) => `${i ? "L" : "M"}${x(i)},${y(v)}`).join("") }));
  return svg;
}

/** Anti-erasure neuron table. data: neuron_data() ({rows, spark, n_total, share_top}). */
function renderNeurons(data) {
  const d = data || {};
  const rows = d.rows || [];
  if (!rows.length) return h("div", { class: "nbx-empty" }, "no neuron data (measure with neurons=True)");
  const m = absMax(rows.map((r) => r.delta_de)) || 1;
  const bar = (v) => {
    const pct = Math.min(100, (100 * Math.abs(v || 0)) / m).toFixed(1);
    const col = (v || 0) >= 0 ? "var(--nbx-pos-soft)" : "var(--nbx-neg-soft)";
    return { background: `linear-gradient(90deg, ${col} ${pct}%, transparent ${pct}%)` };
  };
  return h("div", { class: "nbx-neurons" },
    h("div", { class: "nbx-spark-row" }, sparkline(d.spark || [], 160, 28),
      h("span", { class: "nbx-muted" }, `ΔDE of all ${d.n_total} neurons, sorted`)),
    h("table", { class: "nbx-table" },
      h("thead", null, h("tr", null, h("th", null, "neuron"), h("th", null, "DE clean"), h("th", null, "DE abl."), h("th", null, "ΔDE"))),
      h("tbody", null, rows.map((r, i) => h("tr", { class: r.anti_erasure ? "nbx-ae" : "", "data-nb": `neuron-${i}` },
        h("td", null, h("code", null, `L${r.layer}.${r.neuron}`), r.anti_erasure ? h("span", { class: "nbx-ae-badge", title: "anti-erasure: erased the target on the clean run (DE < 0) and erases less when ablated (ΔDE > 0)" }, "AE") : null),
        h("td", { class: "nbx-num" }, fmt(r.de_clean, 3)),
        h("td", { class: "nbx-num" }, fmt(r.de_ablated, 3)),
        h("td", { class: "nbx-num nbx-strong nbx-bar-cell", "data-value": r.delta_de, style: bar(r.delta_de) }, fmt(r.delta_de, 3)))))),
    d.share_top === null || d.share_top === undefined ? null
      : h("div", { class: "nbx-muted nbx-foot" }, `top-5 neurons carry ${(100 * d.share_top).toFixed(0)}% of SR`, h("sub", null, "MLP")));
}

/** One line chart of per-layer values, clean (dashed) vs ablated (solid), marked layers shaded. */
function layerChart(title, clean, ablated, marked, W = 440, Hh = 150) {
  const L = clean.length;
  const padL = 40, padR = 8, padT = 18, padB = 22;
  const all = [...clean, ...ablated].filter((v) => v !== null && v !== undefined);
  const lo = Math.min(0, ...all), hi = Math.max(0, ...all), span = hi - lo || 1;
  const yy = (v) => padT + ((hi + span * 0.08 - v) / (span * 1.16)) * (Hh - padT - padB);
  const xx = (l) => padL + (L <= 1 ? 0.5 : l / (L - 1)) * (W - padL - padR);
  const svg = s("svg", { class: "nbx-lines nbx-fluid", viewBox: `0 0 ${W} ${Hh}`, style: { maxWidth: W + "px" } });
  svg.append(s("text", { class: "nbx-chart-title", x: padL, y: 11 }, title));
  const bw = (W - padL - padR) / Math.max(1, L - 1);
  for (const l of marked || []) {
    svg.append(s("rect", { class: "nbx-mark", x: xx(l) - bw / 2, y: padT, width: bw, height: Hh - padT - padB }));
  }
  for (const t of ticks(lo - span * 0.08, hi + span * 0.08, 3)) {
    svg.append(s("line", { class: "nbx-gridline", x1: padL, x2: W - padR, y1: yy(t), y2: yy(t) }));
    svg.append(s("text", { class: "nbx-axis", x: padL - 4, y: yy(t) + 3, "text-anchor": "end" }, fmt(t, 2, false)));
  }
  svg.append(s("line", { class: "nbx-zero", x1: padL, x2: W - padR, y1: yy(0), y2: yy(0) }));
  const step = Math.ceil(L / 16);
  for (let l = 0; l < L; l += step) svg.append(s("text", { class: "nbx-axis", x: xx(l), y: Hh - 8, "text-anchor": "middle" }, String(l)));
  const path = (vals) => vals.map((v, l) => `${l ? "L" : "M"}${xx(l)},${yy(v ?? 0)}`).join("");
  svg.append(s("path", { class: "nbx-line-clean", d: path(clean) }));
  svg.append(s("path", { class: "nbx-line-abl", d: path(ablated) }));
  const tip = (l) => s("title", null, `${title.replace(/s$/, "")} ${l}: clean ${fmt(clean[l], 4)}, ablated ${fmt(ablated[l], 4)}, ΔDE ${fmt((ablated[l] ?? 0) - (clean[l] ?? 0), 4)}`);
  clean.forEach((v, l) => svg.append(s("circle", { class: "nbx-dot-clean", cx: xx(l), cy: yy(v ?? 0), r: 2.5 }, tip(l))));
  ablated.forEach((v, l) => svg.append(s("circle", { class: "nbx-dot-abl", cx: xx(l), cy: yy(v ?? 0), r: 3, "data-value": v }, tip(l))));
  return svg;
}

/** Per-layer direct effect, clean vs ablated. data: layer_data(). */
function renderLayers(data) {
  const d = data || {};
  return h("div", { class: "nbx-layers" },
    h("div", { class: "nbx-charts" },
      layerChart("attention layers", d.attn_clean || [], d.attn_ablated || [], d.marked_attn),
      layerChart("MLP layers", d.mlp_clean || [], d.mlp_ablated || [], d.marked_mlp)),
    h("div", { class: "nbx-key" },
      h("span", { class: "nbx-key-clean" }, "clean"), h("span", { class: "nbx-key-abl" }, "ablated"),
      h("span", { class: "nbx-key-mark" }, "ablated layer"),
      h("span", { class: "nbx-muted" }, `DE at ${d.scale === "recomputed" ? "each run's own" : "the clean"} norm scale`)));
}

/** Top-k predictions, clean vs ablated. data: topk_data() ({clean, ablated, target_id}). */
function renderTopK(data) {
  const d = data || {};
  const col = (title, rows, cls) => h("div", { class: "nbx-topk-col" },
    h("div", { class: "nbx-topk-title" }, title),
    (rows || []).map((r, i) => {
      const pct = Math.min(100, 100 * (r.p || 0)).toFixed(1);
      const tint = cls === "clean" ? "var(--nbx-clean-soft)" : "var(--nbx-abl-soft)";
      return h("div", { class: "nbx-topk-row" + (r.id === d.target_id ? " nbx-topk-target" : ""), "data-nb": `${cls}-${i}`, "data-id": r.id, "data-value": r.p,
        style: { background: `linear-gradient(90deg, ${tint} ${pct}%, transparent ${pct}%)` } },
      h("code", { class: "nbx-token" }, tokText(r.token)), h("span", { class: "nbx-num" }, fmtP(r.p)));
    }));
  return h("div", { class: "nbx-topk" }, col("clean", d.clean, "clean"), col("ablated", d.ablated, "ablated"));
}
