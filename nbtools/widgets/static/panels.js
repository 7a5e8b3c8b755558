// nbtools widgets — one pure renderer per panel: (data, opts) -> Element.
// The same renderers draw the Explorer's panels and the standalone widgets.

/** Prompt tokens as buttons. data: {tokens, selected, next?, window? [from, to], extra?,
 *  values? {position: {sr, de, dl}} (each token coloured by its SR on a symmetric scale)};
 *  opts.onClick(pos, evt). A window shows only tokens from..to−1 (a long prompt collapsed to
 *  one row around the selected token); `extra` (an element) is appended. */
function renderTokens(data, opts = {}) {
  const tokens = data.tokens || [];
  const sel = data.selected < 0 ? tokens.length - 1 : data.selected;
  const [from, to] = data.window || [0, tokens.length];
  const vals = data.values || null;
  const vmax = vals ? absMax(Object.values(vals).map((x) => x.sr)) || 1 : 0;
  const more = (n, where) => (n > 0 ? h("span", { class: "nbx-muted nbx-tok-more" }, `\u2026 ${n} ${where}`) : null);
  return h("div", { class: "nbx-tokens" + (data.window ? " nbx-tokens-collapsed" : ""), role: "listbox", "aria-label": "prompt tokens" },
    more(from, "earlier"),
    tokens.slice(from, to).map((t, k) => {
      const i = from + k;
      const cls = ["nbx-tok"];
      if (i === sel) cls.push("nbx-tok-sel");
      if (data.next && i === sel + 1) cls.push("nbx-tok-next");
      const val = vals && vals[i];
      if (vals) cls.push("nbx-tok-colored");
      const c = val ? divergingRGB(val.sr, vmax) : null;
      return h("button", {
        class: cls.join(" "), "data-pos": i, "data-sr": val ? val.sr : null,
        style: c && i !== sel ? { background: rgb(c), color: inkFor(c) } : null,
        title: `position ${i}: ${JSON.stringify(t)}` + (val ? `\nSR ${fmt(val.sr, 4)} · DE ${fmt(val.de, 4)} · ΔL ${fmt(val.dl, 4)}` : ""),
        role: "option", "aria-selected": i === sel ? "true" : "false",
        onclick: (e) => opts.onClick && opts.onClick(i, e),
      }, h("span", { class: "nbx-tok-text" }, tokText(t)), h("sub", { class: "nbx-tok-pos" }, String(i)));
    }), more(tokens.length - to, "later"), data.extra || null);
}

/** Name of a grid cell. */
const headName = (l, hd) => `L${l}H${hd}`;

/** A symmetric colour limit for one column: the largest |value|, unless it is more than
 *  `outlier` × the next largest (MLP0 of many models); then 1.25 × that next one. Same rule
 *  as panels.robust_vmax in Python. */
function robustVmax(values, outlier = 3) {
  const mags = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v)).map(Math.abs).sort((a, b) => b - a);
  if (!mags.length || mags[0] === 0) return 0;
  if (mags.length > 1 && mags[1] > 0 && mags[0] > outlier * mags[1]) return 1.25 * mags[1];
  return mags[0];
}

/** Cell geometry for an L × H grid: wide cells for few heads, shorter rows for deep models. */
function gridGeometry(L, H, hasMlp) {
  const cw = Math.max(11, Math.min(34, Math.floor(440 / Math.max(H, 1))));
  const ch = Math.max(13, Math.min(cw, 34, Math.floor(560 / Math.max(L, 1))));
  const gap = 2, left = 40, top = 20, mlpGap = 14;
  const gridW = H * (cw + gap);
  return { cw, ch, gap, left, top, mlpGap, gridW, width: left + gridW + (hasMlp ? mlpGap + cw + 4 : 0) + 6, height: top + L * (ch + gap) + 4 };
}

/** A persistent layers × heads heat map with an MLP column and clickable layer labels. It is
 *  built once per shape and then updated in place, so a press that lasts through a redraw
 *  still ends in a click on the same element, and keyboard focus survives updates.
 *  Keyboard (ARIA grid, roving tabindex): arrows / Home / End move, Enter or Space ablates
 *  (Shift adds to the set), Escape clears, Ctrl+Z undoes; JupyterLab's own shortcuts are
 *  suppressed there.
 *  opts: {onClick(name, additive, evt), onClear(), onUndo(), tip, tips(kind, l, h) -> lines}
 *  Returns {el, update(data)}; data: {values [L][H], mlp [L] | null, selected [names],
 *  legend, vmax?, dim?, exclude?(name, l, h) -> bool}. */
function makeGrid(opts = {}) {
  const wrap = h("div", { class: "nbx-grid-wrap" });
  let g = null, data = {};
  let focus = { row: 0, col: 0 };

  const nameAt = (row, col) => (col < 0 ? `attn${row}` : col >= g.H ? `mlp${row}` : headName(row, col));
  const kindAt = (col) => (col < 0 ? "attn" : col >= g.H ? "mlp" : "head");
  const cellAt = (row, col) => g.cells.get(nameAt(row, col));

  function moveFocus(row, col, takeFocus) {
    const minCol = -1, maxCol = g.hasMlp ? g.H : g.H - 1;
    row = Math.max(0, Math.min(g.L - 1, row));
    col = Math.max(minCol, Math.min(maxCol, col));
    const old = cellAt(focus.row, focus.col);
    if (old) old.el.setAttribute("tabindex", "-1");
    focus = { row, col };
    const c = cellAt(row, col);
    c.el.setAttribute("tabindex", "0");
    if (takeFocus) c.el.focus();
  }

  function onKey(e) {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[e.key]) { moveFocus(focus.row + moves[e.key][0], focus.col + moves[e.key][1], true); }
    else if (e.key === "Home") moveFocus(focus.row, e.ctrlKey ? -1 : 0, true);
    else if (e.key === "End") moveFocus(focus.row, g.hasMlp ? g.H : g.H - 1, true);
    else if (e.key === "Enter" || e.key === " ") { if (opts.onClick) opts.onClick(nameAt(focus.row, focus.col), e.shiftKey, e); }
    else if (e.key === "Escape") { if (opts.onClear) opts.onClear(); }
    else if (e.key === "z" && (e.ctrlKey || e.metaKey)) { if (opts.onUndo) opts.onUndo(); }
    else return;
    e.preventDefault();
    e.stopPropagation();
  }

  function build(L, H, hasMlp) {
    const geo = gridGeometry(L, H, hasMlp);
    const svg = s("svg", { class: "nbx-grid", width: geo.width, height: geo.height, viewBox: `0 0 ${geo.width} ${geo.height}`, role: "grid", "data-lm-suppress-shortcuts": "true", "aria-label": `attention heads (${L} layers × ${H} heads)${hasMlp ? " and MLP layers" : ""}`, onkeydown: onKey });
    svg.style.maxWidth = geo.width + "px";
    g = { L, H, hasMlp, geo, svg, cells: new Map() };
    const header = s("g", { role: "row" });
    const step = Math.ceil(H / Math.max(1, Math.floor(geo.gridW / 22)));
    for (let hd = 0; hd < H; hd++) {
      header.append(s("text", { class: "nbx-axis", role: "columnheader", x: geo.left + hd * (geo.cw + geo.gap) + geo.cw / 2, y: geo.top - 6, "text-anchor": "middle", visibility: hd % step ? "hidden" : null }, `H${hd}`));
    }
    if (hasMlp) header.append(s("text", { class: "nbx-axis nbx-axis-strong", role: "columnheader", x: geo.left + geo.gridW + geo.mlpGap + geo.cw / 2, y: geo.top - 6, "text-anchor": "middle" }, "MLP"));
    svg.append(header);
    const add = (name, kind, l, hd, el, cross) => {
      el.addEventListener("click", (e) => { moveFocus(l, kind === "attn" ? -1 : kind === "mlp" ? H : hd, false); if (opts.onClick) opts.onClick(name, e.shiftKey || e.metaKey || e.ctrlKey, e); });
      el.addEventListener("focus", () => { if (focus.row !== l || nameAt(focus.row, focus.col) !== name) moveFocus(l, kind === "attn" ? -1 : kind === "mlp" ? H : hd, false); });
      if (opts.tip) hover(el, opts.tip, () => (opts.tips ? opts.tips(kind, l, hd) : [name, `value ${fmt(el.__value, 4)}`]));
      g.cells.set(name, { el, cross, kind, l, hd });
    };
    for (let l = 0; l < L; l++) {
      const y = geo.top + l * (geo.ch + geo.gap);
      const row = s("g", { role: "row" });
      const lab = s("text", { class: "nbx-layer", x: geo.left - 8, y: y + geo.ch / 2 + 4, "text-anchor": "end", "data-name": `attn${l}`, role: "rowheader", tabindex: "-1" }, `L${l}`);
      row.append(lab);
      add(`attn${l}`, "attn", l, null, lab, null);
      const cellFor = (name, kind, hd, x) => {
        const r = s("rect", { class: "nbx-cell" + (kind === "mlp" ? " nbx-mlp" : ""), x, y, width: geo.cw, height: geo.ch, rx: 3, "data-name": name, role: "gridcell", tabindex: "-1" });
        const p = Math.min(geo.cw, geo.ch) * 0.3, cx = x + geo.cw / 2, cy = y + geo.ch / 2, d = Math.min(geo.cw, geo.ch) / 2 - p;
        const cross = s("path", { class: "nbx-cross", d: `M${cx - d},${cy - d}L${cx + d},${cy + d}M${cx + d},${cy - d}L${cx - d},${cy + d}`, display: "none" });
        row.append(r, cross);
        add(name, kind, l, hd, r, cross);
      };
      for (let hd = 0; hd < H; hd++) cellFor(headName(l, hd), "head", hd, geo.left + hd * (geo.cw + geo.gap));
      if (hasMlp) cellFor(`mlp${l}`, "mlp", null, geo.left + geo.gridW + geo.mlpGap);
      svg.append(row);
    }
    g.legend = h("div", { class: "nbx-legend-box" });
    wrap.replaceChildren(svg, g.legend);
    focus = { row: 0, col: 0 };
    moveFocus(0, 0, false);
  }

  function update(next) {
    data = next || {};
    const values = data.values || [];
    const L = values.length, H = L ? values[0].length : 0, mlp = data.mlp || null;
    if (!g || g.L !== L || g.H !== H || g.hasMlp !== !!mlp) build(L, H, !!mlp);
    const selected = new Set(data.selected || []);
    const excluded = (name, l, hd) => !!(data.exclude && data.exclude(name, l, hd));
    let vmax = data.vmax;
    const heads = [], mlps = [];
    values.forEach((row, l) => row.forEach((v, hd) => { if (!excluded(headName(l, hd), l, hd)) heads.push(v); }));
    (mlp || []).forEach((v, l) => { if (!excluded(`mlp${l}`, l, null)) mlps.push(v); });
    const vmaxMlp = data.vmax > 0 ? data.vmax : robustVmax(mlps) || 1;
    if (!(vmax > 0)) vmax = absMax(heads) || vmaxMlp;
    g.svg.classList.toggle("nbx-dim", !!data.dim);
    const words = data.legend || "value";
    const clipped = [];
    for (const [name, c] of g.cells) {
      const { el, cross, kind, l, hd } = c;
      const abl = selected.has(name) || (kind === "head" && selected.has(`attn${l}`));
      if (kind === "attn") {
        el.classList.toggle("nbx-layer-sel", abl);
        el.setAttribute("aria-label", `L${l}: whole attention layer ${l}${abl ? ", ablated" : ""}`);
        el.setAttribute("aria-selected", abl ? "true" : "false");
        continue;
      }
      const v = kind === "mlp" ? mlp[l] : values[l][hd];
      const lim = kind === "mlp" ? vmaxMlp : vmax;
      const ex = excluded(name, l, hd);
      const col = ex ? [225, 225, 225] : divergingRGB(v, lim);
      const clip = !ex && v !== null && v !== undefined && Math.abs(v) > lim * 1.0001;
      if (clip && kind === "mlp") clipped.push(`MLP${l}`);
      el.setAttribute("fill", rgb(col));
      el.setAttribute("data-value", v);
      el.__value = v;
      el.classList.toggle("nbx-cell-abl", abl);
      el.classList.toggle("nbx-clip", clip);
      el.setAttribute("aria-selected", abl ? "true" : "false");
      const what = kind === "mlp" ? `MLP layer ${l}` : `head ${hd} of layer ${l}`;
      el.setAttribute("aria-label", `${kind === "mlp" ? `mlp${l}` : name}: ${what}, ${words} ${fmt(v, 3)}${abl ? ", ablated" : ""}`);
      cross.setAttribute("display", abl ? "inline" : "none");
      cross.setAttribute("stroke", inkFor(col));
    }
    const bars = [legendBar(vmax, words + (mlp ? " \u00b7 heads" : ""))];
    if (mlp) bars.push(legendBar(vmaxMlp, "MLP column (own scale" + (clipped.length ? `; ${clipped.join(", ")} beyond` : "") + ")", "mlp"));
    g.legend.replaceChildren(...bars);
  }

  return { el: wrap, update };
}

/** A one-off grid (standalone widgets): makeGrid + update. */
function renderGrid(data, opts = {}) {
  const grid = makeGrid(opts);
  grid.update(data);
  return grid.el;
}

/** Horizontal colour bar for a symmetric diverging scale, with a caption below. */
function legendBar(vmax, label, key) {
  const w = 180, hgt = 8, n = 24;
  const svg = s("svg", { class: "nbx-legend-bar", width: w + 70, height: 13 });
  for (let i = 0; i < n; i++) {
    const v = -vmax + (2 * vmax * (i + 0.5)) / n;
    svg.append(s("rect", { x: 35 + (i * w) / n, y: 2, width: w / n + 0.5, height: hgt, fill: rgb(divergingRGB(v, vmax)) }));
  }
  svg.append(s("text", { class: "nbx-axis", x: 31, y: 10, "text-anchor": "end" }, fmt(-vmax, 2)));
  svg.append(s("text", { class: "nbx-axis", x: 39 + w, y: 10 }, fmt(vmax, 2)));
  return h("div", { class: "nbx-legend", "data-nb": key ? `legend-${key}` : "legend", "data-vmax": vmax }, svg, h("div", { class: "nbx-legend-label" }, label));
}

/** Target logit and probability, clean → ablated. data: logit_data(); opts.cleanOnly: only
 *  the clean values (nothing ablated). A note explains centred logits, louder when ΔL and
 *  the probability move in opposite directions. */
function renderLogit(data, opts = {}) {
  const d = data || {};
  const clean = !!opts.cleanOnly;
  const delta = d.delta;
  const badge = (clean || delta === null || delta === undefined) ? null
    : h("span", { class: "nbx-badge " + (delta < 0 ? "nbx-neg" : "nbx-pos"), "data-nb": "logit-delta", "data-value": delta }, `ΔL ${fmt(delta, 3)}`);
  const arrow = () => (clean ? null : h("span", { class: "nbx-arrow" }, "\u2192"));
  const after = (key, value, text) => (clean ? null : h("span", { class: "nbx-num nbx-strong", "data-nb": key, "data-value": value }, text));
  const dp = (d.p_clean ?? null) === null ? null : (d.p_ablated ?? 0) - d.p_clean;
  const opposite = !clean && dp !== null && delta !== null && delta !== undefined && Math.abs(delta) > 1e-6 && Math.abs(dp) > 1e-9 && (delta > 0) !== (dp > 0);
  const note = d.centred === false || d.minus !== undefined ? null : h("div", { class: "nbx-note" + (opposite ? " nbx-note-warn" : ""), "data-nb": "centred-note", "data-opposite": opposite ? "1" : "0" },
    opposite ? `ΔL and the probability moved in opposite directions: ΔL is the centred logit (the target's logit minus the mean over the vocabulary), while the probability also depends on how every other token's logit moved (softmax).`
      : "logits are centred: the target's logit minus the mean logit over the vocabulary");
  return h("div", { class: "nbx-logit" },
    h("div", { class: "nbx-logit-target" }, "target ",
      h("code", { class: "nbx-token", "data-nb": "target-token" }, tokText(d.token)),
      d.minus !== undefined ? [" \u2212 ", h("code", { class: "nbx-token", "data-nb": "target-minus" }, tokText(d.minus)),
        h("span", { class: "nbx-muted" }, " logit difference")] : h("span", { class: "nbx-muted" }, ` id ${d.id ?? "?"}`)),
    h("div", { class: "nbx-logit-row" },
      h("span", { class: "nbx-label" }, d.minus !== undefined ? "logit diff." : d.centred === false ? "logit" : "logit (centred)"),
      h("span", { class: "nbx-num" + (clean ? " nbx-strong" : ""), "data-nb": "logit-clean", "data-value": d.clean }, fmt(d.clean, 3)), arrow(),
      after("logit-ablated", d.ablated, fmt(d.ablated, 3)), badge),
    h("div", { class: "nbx-logit-row" },
      h("span", { class: "nbx-label" }, d.minus !== undefined ? `p(${tokText(d.token)})` : "probability"),
      h("span", { class: "nbx-num" + (clean ? " nbx-strong" : ""), "data-nb": "p-clean", "data-value": d.p_clean }, fmtP(d.p_clean)), arrow(),
      after("p-ablated", d.p_ablated, fmtP(d.p_ablated)),
      clean ? null : probBars(d.p_clean, d.p_ablated)),
    note);
}

/** The numbers papers quote. data: headline_data(); opts: {prime (show SR′ = ΔL + DE),
 *  ablated [names]}. */
function renderHeadline(data, opts = {}) {
  const d = data || {};
  const prime = !!opts.prime;
  const sr = prime ? d.sr_prime : d.sr, share = prime ? d.sr_prime_share : d.sr_share;
  const what = (opts.ablated || []).join(" + ") || "the ablated parts";
  const big = (label, key, value, text, title) => h("div", { class: "nbx-hl", title },
    h("div", { class: "nbx-hl-label" }, label), h("div", { class: "nbx-hl-num nbx-num", "data-nb": key, "data-value": value }, text));
  const pct = share === null || share === undefined ? "\u2013" : (share < 0 ? MINUS : "") + Math.abs(100 * share).toFixed(0) + "%";
  return h("div", { class: "nbx-headline" },
    h("div", { class: "nbx-hl-row" },
      big(prime ? "SR\u2032 = ΔL + DE" : "self-repair SR", "hl-sr", sr, fmt(sr, 3),
        prime ? "ΔL + DE: self-repair if the ablated parts' own direct effect were gone entirely" : "SR = ΔL − (DE\u2032 − DE): how much of the loss the rest of the model made up"),
      big(`DE of ${what}`, "hl-de", d.de, fmt(d.de, 3), "the ablated parts' direct effect on the target in the clean run"),
      big(prime ? "SR\u2032 / DE" : "SR / DE", "hl-share", share, pct, "self-repair as a share of the direct effect (Rushing & Nanda's main metric)"),
      big("ΔL", "hl-dl", d.delta_logit, fmt(d.delta_logit, 3), "net change of the target's centred logit")),
    h("div", { class: "nbx-muted nbx-hl-words" }, share === null || share === undefined
      ? "DE is about zero: no share of it to repair"
      : `the rest of the model made up ${pct} of ${what}'s direct effect` + (d.de < 0 ? " (DE < 0: the part was pushing against the target)" : "")));
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

/** Anti-erasure neurons. data: neuron_data() ({rows: anti-erasure neurons, negative: the
 *  largest negative movers, spark, n_total, n_ae, ae_sum, top_sum, sr_mlp, share_top}).
 *  opts.onClick(name, additive): a row was clicked (or Enter / Space on it): "mlp<L>:<n>". */
function renderNeurons(data, opts = {}) {
  const d = data || {};
  const rows = d.rows || [], neg = d.negative || [];
  if (!rows.length && !neg.length && !d.n_total) return h("div", { class: "nbx-empty" }, d.note || "no neuron data (measure with neurons=True)");
  const m = absMax([...rows, ...neg].map((r) => r.delta_de)) || 1;
  const bar = (v) => {
    const pct = Math.min(100, (100 * Math.abs(v || 0)) / m).toFixed(1);
    const col = (v || 0) >= 0 ? "var(--nbx-pos-soft)" : "var(--nbx-neg-soft)";
    return { background: `linear-gradient(90deg, ${col} ${pct}%, transparent ${pct}%)` };
  };
  const act = (name) => (e) => {
    if (!opts.onClick || (e.type === "keydown" && e.key !== "Enter" && e.key !== " ")) return;
    e.preventDefault();
    opts.onClick(name, e.shiftKey || e.metaKey || e.ctrlKey);
  };
  const line = (r, key) => h("tr", { class: (r.anti_erasure ? "nbx-ae" : "nbx-negmove") + (opts.onClick ? " nbx-clickable" : ""), "data-nb": key, "data-neuron": `mlp${r.layer}:${r.neuron}`,
    tabindex: opts.onClick ? "0" : null, title: opts.onClick ? `click: ablate neuron ${r.neuron} of MLP ${r.layer} (mlp${r.layer}:${r.neuron}) \u00b7 shift-click: add it` : null,
    onclick: act(`mlp${r.layer}:${r.neuron}`), onkeydown: act(`mlp${r.layer}:${r.neuron}`) },
    h("td", null, h("code", null, `L${r.layer}.${r.neuron}`), r.anti_erasure ? h("span", { class: "nbx-ae-badge", title: "anti-erasure: erased the target on the clean run (DE < 0) and erases less when ablated (ΔDE > 0)" }, "AE") : null),
    h("td", { class: "nbx-num" }, fmt(r.de_clean, 3)),
    h("td", { class: "nbx-num" }, fmt(r.de_ablated, 3)),
    h("td", { class: "nbx-num nbx-strong nbx-bar-cell", "data-value": r.delta_de, style: bar(r.delta_de) }, fmt(r.delta_de, 3)));
  const body = [...rows.map((r, i) => line(r, `neuron-${i}`))];
  if (neg.length) {
    body.push(h("tr", { class: "nbx-subhead" }, h("td", { colspan: 4 }, "moved the other way (largest negative ΔDE)")));
    body.push(...neg.map((r, i) => line(r, `negative-${i}`)));
  }
  const k = rows.length;
  let foot;
  if (!k) foot = "No neuron erased the target in the clean run and erased less after the ablation.";
  else {
    foot = `${k === 1 ? "This neuron" : `These ${k} neurons`} pushed the target down in the clean run (DE < 0) and pushed less once ablated: together ${fmt(d.top_sum, 3)} logits back`;
    if (d.sr_mlp === null || d.sr_mlp === undefined) foot += ".";
    else if (d.share_top !== null && d.share_top !== undefined && d.sr_mlp > 0) foot += `, ${(100 * d.share_top).toFixed(0)}% of the MLP layers' self-repair (${fmt(d.sr_mlp, 3)}).`;
    else foot += `; the MLP layers' self-repair overall is ${fmt(d.sr_mlp, 3)} (other neurons moved the other way).`;
    if (d.n_ae !== undefined && d.ae_sum !== undefined) foot += ` All ${d.n_ae} such neurons of ${d.n_total}: ${fmt(d.ae_sum, 3)}.`;
  }
  return h("div", { class: "nbx-neurons" },
    h("div", { class: "nbx-spark-row" }, sparkline(d.spark || [], 160, 28),
      h("span", { class: "nbx-muted" }, `ΔDE of all ${d.n_total} neurons, sorted`)),
    h("table", { class: "nbx-table" },
      h("thead", null, h("tr", null, h("th", null, "neuron"), h("th", null, "DE clean"), h("th", null, "DE abl."), h("th", null, "ΔDE"))),
      h("tbody", null, body)),
    h("div", { class: "nbx-muted nbx-foot", "data-nb": "neurons-foot" }, foot));
}

/** One line chart of per-layer values, clean (dashed) vs ablated (solid), marked layers shaded. */
function layerChart(title, clean, ablated, marked, W = 440, Hh = 150) {
  const L = clean.length;
  const padL = 40, padR = 8, padT = 18, padB = 22;
  const all = [...clean, ...ablated].filter((v) => v !== null && v !== undefined);
  // a robust range: one outlying layer (MLP0) must not flatten the rest; it is drawn at the
  // edge with its value written next to it
  const lim = robustVmax(clean.map((v, l) => absMax([v, ablated[l]]))), big = absMax(all);  // one per layer
  const cut = lim > 0 && lim < big;
  const lo = Math.max(cut ? -lim : -Infinity, Math.min(0, ...all)), hi = Math.min(cut ? lim : Infinity, Math.max(0, ...all)), span = hi - lo || 1;
  const yy = (v) => padT + ((hi + span * 0.08 - Math.max(lo, Math.min(hi, v))) / (span * 1.16)) * (Hh - padT - padB);
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
  if (cut) {
    const seen = new Set();
    [...clean.map((v, l) => [v, l]), ...ablated.map((v, l) => [v, l])].forEach(([v, l]) => {
      if (v === null || v === undefined || Math.abs(v) <= lim || seen.has(l)) return;
      seen.add(l);
      svg.append(s("text", { class: "nbx-axis nbx-clip-label", "data-nb": `clipped-${l}`, x: xx(l) + (l < L / 2 ? 6 : -6), y: v > 0 ? padT + 9 : Hh - padB - 3, "text-anchor": l < L / 2 ? "start" : "end" },
        `${v > 0 ? "\u25b2" : "\u25bc"} layer ${l}: ${fmt(v, 2)} (off scale)`));
    });
  }
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

/** Top-k predictions, clean vs ablated. data: topk_data() ({clean, ablated, target_id});
 *  opts.cleanOnly: the clean column only (nothing ablated). */
function renderTopK(data, opts = {}) {
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
  return h("div", { class: "nbx-topk" }, col("clean", d.clean, "clean"), opts.cleanOnly ? null : col("ablated", d.ablated, "ablated"));
}

/** Components as a sortable table (heads and MLP layers). rows: [{component, de_clean,
 *  delta_de, sr_alone, ablated}] (as export.component_rows); opts: {sort, desc, limit,
 *  onSort(key), onClick(name, additive), onMore()}. */
function renderComponents(rows, opts = {}) {
  const cols = [["component", "component"], ["de_clean", "DE clean"], ["delta_de", "ΔDE now"], ["sr_alone", "SR alone"]];
  const key = opts.sort || "delta_de", desc = opts.desc !== false;
  const val = (r) => (key === "component" ? r.layer * 1000 + (r.head ?? 999) : r[key]);
  const sorted = [...rows].sort((a, b) => {
    const x = val(a), y = val(b);
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return desc ? y - x : x - y;
  });
  const shown = sorted.slice(0, opts.limit || sorted.length);
  const head = h("tr", null, cols.map(([k, label]) => h("th", { "aria-sort": k === key ? (desc ? "descending" : "ascending") : "none" },
    h("button", { class: "nbx-sort" + (k === key ? " nbx-on-sort" : ""), "data-nb": `sort-${k}`, onclick: () => opts.onSort && opts.onSort(k) },
      label + (k === key ? (desc ? " \u25bc" : " \u25b2") : "")))));
  const act = (name) => (e) => {
    if (!opts.onClick || (e.type === "keydown" && e.key !== "Enter" && e.key !== " ")) return;
    e.preventDefault();
    opts.onClick(name, e.shiftKey || e.metaKey || e.ctrlKey);
  };
  const body = shown.map((r, i) => h("tr", { class: "nbx-clickable" + (r.ablated ? " nbx-row-abl" : ""), tabindex: "0", "data-nb": `comp-${i}`, "data-component": r.component,
    onclick: act(r.component), onkeydown: act(r.component), title: `click: ablate ${r.component} \u00b7 shift-click: add it` },
  h("td", null, h("code", null, r.component)), h("td", { class: "nbx-num", "data-value": r.de_clean }, fmt(r.de_clean, 3)),
  h("td", { class: "nbx-num", "data-value": r.delta_de }, fmt(r.delta_de, 3)), h("td", { class: "nbx-num", "data-value": r.sr_alone }, fmt(r.sr_alone, 3))));
  return h("div", { class: "nbx-components" },
    h("table", { class: "nbx-table" }, h("thead", null, head), h("tbody", null, body)),
    shown.length < sorted.length ? h("button", { class: "nbx-btn nbx-btn-quiet", "data-nb": "comp-more", onclick: () => opts.onMore && opts.onMore() }, `all ${sorted.length}`) : null);
}
