// nbtools widgets — the attention panel: one head's clean attention pattern.

/** Colour of an attention weight w in [0, 1] (white → dark blue; sqrt for small weights). */
const attnRGB = (w) => ramp(NEG, Math.sqrt(Math.max(0, w ?? 0)) * 0.95);

/** One head's clean attention pattern. data (panels.attention_data): {layer, head, position,
 *  tokens [T], row [T] (the measured query's weights), matrix [T][T] | null}. With a matrix:
 *  a T × T heat map (rows: query positions, columns: keys; the measured row outlined);
 *  without one (a long prompt): the measured row as a strip of tokens shaded by weight.
 *  Every cell carries data-q, data-k, data-w. */
function renderAttention(data, opts = {}) {
  const toks = data.tokens || [], T = toks.length, q = data.position;
  const label = (i) => tokText(toks[i]);
  const tipLines = (qi, k, w) => [`L${data.layer}H${data.head}: ${label(qi)} (${qi}) \u2192 ${label(k)} (${k})`, `attention ${(100 * w).toFixed(1)}%`];
  if (!data.matrix) {
    return h("div", { class: "nbx-attn nbx-attn-strip", "data-nb": "attention-strip" },
      h("div", { class: "nbx-muted nbx-attn-caption" }, `position ${q} (${label(q)}) attends to:`),
      h("div", { class: "nbx-attn-tokens" }, (data.row || []).map((w, k) => {
        const c = attnRGB(w);
        return hover(h("span", { class: "nbx-attn-tok", "data-q": q, "data-k": k, "data-w": w,
          style: { background: rgb(c), color: inkFor(c) } }, tokText(toks[k])), opts.tip, () => tipLines(q, k, w));
      })));
  }
  const cell = Math.max(6, Math.min(18, Math.floor(360 / Math.max(T, 1))));
  const showLabels = cell >= 9, left = showLabels ? 72 : 8, top = showLabels ? 64 : 8;
  const W = left + T * cell + 4, H = top + T * cell + 4;
  const svg = s("svg", { class: "nbx-attn-svg", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `attention pattern of head L${data.layer}H${data.head}, ${T} tokens; measured position ${q}` });
  data.matrix.forEach((row, qi) => row.forEach((w, k) => {
    if (k > qi) return;  // causal: nothing above the diagonal
    svg.append(hover(s("rect", { class: "nbx-attn-cell", x: left + k * cell, y: top + qi * cell, width: cell - 1, height: cell - 1,
      fill: rgb(attnRGB(w)), "data-q": qi, "data-k": k, "data-w": w }), opts.tip, () => tipLines(qi, k, w)));
  }));
  if (showLabels) {
    const fs = Math.min(11, cell - 2), clip = (t) => (t.length > 9 ? t.slice(0, 8) + "\u2026" : t);
    toks.forEach((t, i) => {
      svg.append(s("text", { class: "nbx-attn-label" + (i === q ? " nbx-attn-label-sel" : ""), x: left - 4, y: top + i * cell + cell / 2,
        "text-anchor": "end", "dominant-baseline": "central", "font-size": fs }, clip(tokText(t))));
      const x = left + i * cell + cell / 2, y = top - 4;
      svg.append(s("text", { class: "nbx-attn-label", x, y, "font-size": fs, transform: `rotate(-60 ${x} ${y})` }, clip(tokText(t))));
    });
  }
  svg.append(s("rect", { class: "nbx-attn-row", "data-nb": "attention-row", x: left - 1, y: top + q * cell - 1, width: (q + 1) * cell + 1, height: cell + 1 }));
  return h("div", { class: "nbx-attn", "data-nb": "attention-matrix" },
    h("div", { class: "nbx-muted nbx-attn-caption" }, `rows: query positions \u00b7 columns: keys \u00b7 outlined: the measured position ${q}`), svg);
}
