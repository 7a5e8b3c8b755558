// nbtools widgets — the Explorer's who-repairs-whom map (rows: the ablated head / MLP layer,
// columns: every downstream head, MLP layer and the final norm; cell: ΔDE in logits).

/** Canvas geometry: square cells as large as fit a ~620 px wide panel (2..10 px). */
function mapGeometry(nRows, nCols) {
  const cell = Math.max(2, Math.min(10, Math.floor(620 / Math.max(nCols, 1))));
  return { cell, W: nCols * cell, H: nRows * cell };
}

/** Draw map data (panels.map_data) on a canvas; null rows (not measured yet) stay grey. */
function drawRepairMap(canvas, data, selectedRows) {
  const { rows, columns, values, row_layers: rl, column_layers: cl } = data;
  const { cell, W, H } = mapGeometry(rows.length, columns.length);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = H * dpr;
  canvas.style.width = W + "px"; canvas.style.height = H + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const vmax = data.vmax || 0;
  rows.forEach((_, r) => {
    const row = values[r];
    columns.forEach((_c, c) => {
      ctx.fillStyle = rgb(row ? divergingRGB(row[c], vmax) : [226, 226, 226]);
      ctx.fillRect(c * cell, r * cell, cell, cell);
    });
  });
  ctx.strokeStyle = "rgba(0,0,0,0.35)"; ctx.lineWidth = 1;
  ctx.beginPath();
  for (let r = 1; r < rows.length; r++) if (rl[r] !== rl[r - 1]) { ctx.moveTo(0, r * cell + 0.5); ctx.lineTo(W, r * cell + 0.5); }
  for (let c = 1; c < columns.length; c++) if (cl[c] !== cl[c - 1]) { ctx.moveTo(c * cell + 0.5, 0); ctx.lineTo(c * cell + 0.5, H); }
  ctx.stroke();
  ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
  rows.forEach((name, r) => { if (selectedRows.has(name)) ctx.strokeRect(1, r * cell + 1, W - 2, Math.max(cell - 2, 1)); });
  return cell;
}

/** The Explorer's map panel: a toggle (`map_on`), the heatmap, a hover label, row clicks
 *  ablate that row's component. Returns the panel element; listens to the model itself. */
function mountRepairMap({ model, tip, commit, view }) {
  const toggle = h("button", { class: "nbx-btn nbx-btn-quiet", "data-nb": "map-toggle",
    title: "who repairs whom: ΔDE of every downstream component (columns) when each head / MLP layer (rows) is ablated alone",
    onclick: () => { model.set("map_on", !model.get("map_on")); model.save_changes(); } }, "show map");
  const canvas = h("canvas", { class: "nbx-map-canvas", "data-nb": "repair-map" });
  const note = h("div", { class: "nbx-hint", "data-nb": "map-note" });
  const label = h("div", { class: "nbx-map-label", "data-nb": "map-label" }, "\u00a0");
  const body = h("div", { class: "nbx-map-body nbx-hidden" }, note, h("div", { class: "nbx-map-scroll" }, canvas), label);
  const el = panel("Who repairs whom", toggle, body, { class: "nbx-panel nbx-map-panel", "data-panel": "map" });
  let cell = 0;

  const current = () => {
    const d = model.get("map_data") || {};
    if (!d.rows) return null;
    return d.source === "result" || d.key === view().key ? d : null;
  };
  const at = (e) => {
    const d = current();
    if (!d || !cell) return null;
    const box = canvas.getBoundingClientRect();
    const r = Math.floor((e.clientY - box.top) / cell), c = Math.floor((e.clientX - box.left) / cell);
    return r >= 0 && r < d.rows.length && c >= 0 && c < d.columns.length ? { d, r, c } : null;
  };
  const describe = ({ d, r, c }) => {
    const row = d.values[r], v = row ? row[c] : undefined;
    const what = row ? (v === null ? "the ablated component itself" : `ΔDE ${fmt(v, 4)}`) : "not measured yet";
    return [`${d.rows[r]} ablated \u2192 ${d.columns[c]}`, what, "click: ablate " + d.rows[r]];
  };
  canvas.addEventListener("mousemove", (e) => {
    const hit = at(e);
    if (!hit) { tip.hide(); return; }
    const lines = describe(hit);
    label.textContent = lines.slice(0, 2).join(": ");
    tip.show(e, lines);
  });
  canvas.addEventListener("mouseleave", () => tip.hide());
  canvas.addEventListener("click", (e) => {
    const hit = at(e);
    if (hit) commit({ ablation: toggleSelection(model.get("ablation") || [], hit.d.rows[hit.r], e.shiftKey || e.ctrlKey || e.metaKey) });
  });

  function draw() {
    const on = !!model.get("map_on");
    toggle.textContent = on ? "hide map" : "show map";
    toggle.classList.toggle("nbx-on-quiet", on);
    body.classList.toggle("nbx-hidden", !on);
    if (!on) return;
    const d = current();
    el.dataset.mapKey = d ? d.key : "";
    el.dataset.done = d ? d.done : -1;
    el.dataset.total = d ? d.total : -1;
    canvas.classList.toggle("nbx-hidden", !d);
    if (!d) { note.textContent = "measuring every head and MLP layer ablated alone\u2026"; return; }
    const progress = d.done < d.total ? ` \u2026 ${d.done}/${d.total} layers` : "";
    note.textContent = `rows: ablated alone (${d.rows.length}) \u00b7 columns: downstream heads, MLPs, LN (${d.columns.length}) \u00b7 ` +
      `ΔDE at ${d.label}, colour \u00b1${fmt(d.vmax, 3, false)}${progress} \u00b7 click a row to ablate it`;
    cell = drawRepairMap(canvas, d, new Set(model.get("ablation") || []));
  }
  for (const n of ["map_on", "map_data", "view", "ablation"]) model.on(`change:${n}`, draw);
  draw();
  return el;
}
