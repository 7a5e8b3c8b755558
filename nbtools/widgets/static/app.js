// nbtools widgets — the standalone panel widgets and the Explorer.

const PANEL_RENDERERS = {
  logit: renderLogit, waterfall: renderWaterfall, gauge: renderGauge,
  neurons: renderNeurons, layers: renderLayers, topk: renderTopK,
};

function renderStandalone(model, el) {
  const kind = model.get("_kind");
  const body = h("div", { class: "nbx-body" });
  const root = h("div", { class: "nbx nbx-standalone", "data-kind": kind }, body);
  el.replaceChildren(root);
  const tip = makeTip(root);
  const draw = () => {
    let content;
    if (kind === "grid") {
      content = renderGrid({
        values: model.get("values"), mlp: model.get("mlp"), selected: model.get("selected"),
        legend: model.get("legend"), vmax: model.get("vmax"),
      }, { tip, onClick: (name, additive) => model.send({ type: "click", name, additive }) });
    } else if (kind === "tokens") {
      content = renderTokens({ tokens: model.get("tokens"), selected: model.get("selected") },
        { onClick: (pos) => model.send({ type: "click", position: pos }) });
    } else {
      content = PANEL_RENDERERS[kind](model.get("data"));
    }
    const title = model.get("title");
    body.replaceChildren(title ? panel(title, null, content) : content);
  };
  const names = { grid: ["values", "mlp", "selected", "legend", "vmax"], tokens: ["tokens", "selected"] }[kind] || ["data"];
  names.push("title");
  for (const n of names) model.on(`change:${n}`, draw);
  draw();
  return () => { for (const n of names) model.off(`change:${n}`, draw); };
}

// ------------------------------------------------------------------------------------------
// Explorer
// ------------------------------------------------------------------------------------------

const COLOR_MODES = [
  ["de", "clean DE", "colour = each component's direct effect on the target (clean run)"],
  ["sr", "self-repair", "colour = self-repair when that head / MLP is ablated alone (a sweep)"],
  ["delta", "who repaired", "colour = ΔDE of every component under the current ablation"],
];

function renderExplorer(model, el) {
  const root = h("div", { class: "nbx nbx-explorer", "data-seq": -1 });
  el.replaceChildren(root);
  const tip = makeTip(root);
  let exportFormat = "png";

  const commit = (changes) => {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.set("request_seq", (model.get("request_seq") || 0) + 1);
    model.save_changes();  // the change events redraw what changed
  };
  const view = () => model.get("view") || {};
  const stale = () => Math.max(view().seq ?? -1, model.get("done_seq") ?? -1) < (model.get("request_seq") || 0);

  // --- top bar: title, settings, export, status ---
  const sel = (name, options, label, title) => {
    const box = h("select", { class: "nbx-select", "data-nb": name, title, "aria-label": label,
      onchange: (e) => commit({ [name]: e.target.value }) },
    options.map(([v, t]) => h("option", { value: v }, t)));
    return h("label", { class: "nbx-field" }, h("span", null, label), box);
  };
  const method = sel("method", [["zero", "zero"], ["mean", "mean"], ["resample", "resample"]], "ablation", "how an ablated component is replaced");
  const positions = sel("positions", [["all", "all positions"], ["measured", "measured position"]], "at", "where the ablation is applied");
  const scale = sel("scale", [["clean", "clean (R&N)"], ["recomputed", "recomputed"]], "norm scale", "final-norm scale used for ablated-run direct effects");
  const source = h("input", {
    class: "nbx-input nbx-source", type: "text", "data-nb": "source", spellcheck: "false",
    placeholder: "source prompt (resample) / reference (mean)",
    onkeydown: (e) => { if (e.key === "Enter") commit({ source: e.target.value }); },
    onchange: (e) => commit({ source: e.target.value }),
  });
  const sourceField = h("label", { class: "nbx-field nbx-source-field" }, h("span", null, "source"), source);
  const fmtSel = h("select", { class: "nbx-select", "aria-label": "export format", onchange: (e) => { exportFormat = e.target.value; } },
    ["png", "svg", "pdf", "csv", "json"].map((f) => h("option", { value: f }, f.toUpperCase())));
  const exportBtn = h("button", { class: "nbx-btn", "data-nb": "export", title: "download the current view: a matplotlib figure (PNG, SVG, PDF) or its numbers (CSV: one row per component; JSON: every panel)",
    onclick: () => { model.send({ type: "export", format: exportFormat }); status.text.textContent = `exporting ${exportFormat.toUpperCase()}\u2026`; } }, "Export");
  const codeBtn = h("button", { class: "nbx-btn", "data-nb": "code", title: "copy a notebook cell that reproduces this view (nbtools.load + lab.measure + the figure)",
    onclick: () => { model.send({ type: "code" }); status.text.textContent = "writing code\u2026"; } }, "Code");
  const status = { spin: h("span", { class: "nbx-spinner", "aria-hidden": "true" }), text: h("span", { class: "nbx-status-text", "data-nb": "status" }) };
  const statusBox = h("div", { class: "nbx-status", "aria-live": "polite" }, status.spin, status.text);
  const bar = h("div", { class: "nbx-bar" },
    h("div", { class: "nbx-brand" }, h("span", { class: "nbx-logo" }, "\u25e9"), h("span", null, "Self-repair Explorer"),
      h("span", { class: "nbx-model", "data-nb": "model" }, "")),
    statusBox, h("span", { class: "nbx-export" }, fmtSel, exportBtn, codeBtn));
  const toolbar = h("div", { class: "nbx-controls" }, method, sourceField, positions, scale);
  const errorBox = h("div", { class: "nbx-error", "data-nb": "error", role: "alert" });

  // --- prompt + target ---
  const promptInput = h("input", { class: "nbx-input nbx-prompt-input", type: "text", "data-nb": "prompt-input", spellcheck: "false",
    onkeydown: (e) => {
      if (e.key === "Enter") { commit({ prompt: e.target.value, position: -1 }); promptRow.classList.remove("nbx-editing"); }
      if (e.key === "Escape") promptRow.classList.remove("nbx-editing");
    } });
  const tokensBox = h("div", { class: "nbx-tokens-box", "data-nb": "tokens" });
  const editBtn = h("button", { class: "nbx-btn nbx-btn-quiet", title: "edit the prompt", "data-nb": "edit-prompt",
    onclick: () => { promptInput.value = model.get("prompt"); promptRow.classList.add("nbx-editing"); promptInput.focus(); } }, "\u270e edit");
  const promptRow = h("div", { class: "nbx-prompt" }, h("span", { class: "nbx-rowlabel" }, "prompt"), tokensBox, promptInput, editBtn);

  let customOpen = false;
  const modeBtn = (mode, text) => h("button", { class: "nbx-seg", "data-nb": `target-${mode}`, onclick: () => {
    if (mode === "custom" && !(model.get("target_text") || "").trim()) {
      customOpen = true; drawControls(); targetInput.focus(); return;  // wait for a token
    }
    customOpen = false;
    commit({ target_mode: mode });
  } }, text);
  const targetBtns = { next: modeBtn("next", "next token"), top: modeBtn("top", "top prediction"), custom: modeBtn("custom", "custom") };
  const commitTarget = (e) => { if (e.key === "Enter") { customOpen = false; commit({ target_mode: "custom", target_text: targetInput.value, target_minus: minusInput.value }); } };
  const targetInput = h("input", { class: "nbx-input nbx-target-input", type: "text", placeholder: "type a token", "data-nb": "target-input", spellcheck: "false", onkeydown: commitTarget });
  const minusInput = h("input", { class: "nbx-input nbx-target-input", type: "text", placeholder: "\u2212 token", "data-nb": "target-minus-input", spellcheck: "false",
    title: "optional: a second token; the target becomes the logit difference (e.g. ' Mary' \u2212 ' John', the IOI metric)", onkeydown: commitTarget });
  const targetInfo = h("span", { class: "nbx-target-info" });
  const targetRow = h("div", { class: "nbx-target" }, h("span", { class: "nbx-rowlabel" }, "target"),
    h("span", { class: "nbx-segs" }, targetBtns.next, targetBtns.top, targetBtns.custom), targetInput, minusInput, targetInfo);

  // --- grid panel ---
  const modeSegs = h("span", { class: "nbx-segs nbx-segs-small" }, COLOR_MODES.map(([m, t, title]) =>
    h("button", { class: "nbx-seg", "data-nb": `color-${m}`, title, onclick: () => { model.set("color_by", m); model.save_changes(); drawGrid(); } }, t)));
  const grid = makeGrid({
    tip, tips: (...a) => tips(...a),
    onClick: (name, additive) => commit({ ablation: toggleSelection(ablation(), name, additive) }),
    onClear: () => { if (ablation().length) commit({ ablation: [] }); },
    onUndo: () => undo(),
  });
  const gridEmpty = h("div", { class: "nbx-empty" }, "measuring\u2026");
  const gridBody = h("div", { class: "nbx-grid-body" }, gridEmpty, grid.el);
  const chips = h("div", { class: "nbx-chips", "data-nb": "ablated" });
  const undo = () => { if (model.get("can_undo")) model.send({ type: "undo" }); };
  const undoBtn = h("button", { class: "nbx-btn nbx-btn-quiet", "data-nb": "undo", title: "back to the previous ablation (Ctrl+Z in the grid)", onclick: undo }, "\u21b6 undo");
  const gridPanel = panel("Heads \u00d7 layers", modeSegs, h("div", null, gridBody, chips,
    h("div", { class: "nbx-hint" }, "click a head to ablate it \u00b7 click L# for the whole attention layer \u00b7 MLP cell for the MLP layer \u00b7 shift-click to build a set \u00b7 keys: arrows, Enter, Esc")));

  // --- result panels ---
  const slots = {};
  const slot = (name) => (slots[name] = h("div", { class: "nbx-slot", "data-panel": name }));
  let srPrime = false;
  const primeSegs = h("span", { class: "nbx-segs nbx-segs-small" },
    [[false, "SR", "self-repair SR = ΔL − (DE\u2032 − DE), DE\u2032 the ablated parts' own DE in the ablated run"],
      [true, "SR\u2032 = ΔL + DE", "SR\u2032 assumes the ablated parts' DE is gone entirely (DE\u2032 = 0)"]].map(([p, t, title]) =>
      h("button", { class: "nbx-seg", "data-nb": p ? "sr-prime" : "sr-plain", title, onclick: () => { srPrime = p; drawHeadline(); } }, t)));
  const result = { class: "nbx-panel nbx-result" };
  const headPanel = panel("Self-repair", primeSegs, slot("headline"), { class: "nbx-panel nbx-result nbx-when-ablated" });
  const logitPanel = panel("Target", null, slot("logit"), result);
  const wfPanel = panel("Self-repair waterfall", "logits, at the measured position", slot("waterfall"), { class: "nbx-panel nbx-result nbx-when-ablated" });
  const gaugePanel = panel("Final-norm rescaling", "s/s\u2032 scales every surviving logit", slot("gauge"), { class: "nbx-panel nbx-result nbx-when-ablated" });
  const layersPanel = panel("Direct effect per layer", "Hydra Fig. 1 style", slot("layers"), result);
  const neuronsPanel = panel("Anti-erasure neurons", "erased the target, erase less now", slot("neurons"), { class: "nbx-panel nbx-result nbx-when-ablated" });
  const topkPanel = panel("Top predictions", "clean vs ablated", slot("topk"), result);
  const compState = { sort: "delta_de", desc: true, limit: 12 };
  const compPanel = panel("Components", "sortable; SR alone with the self-repair colouring", slot("components"), result);
  const attnPanel = panel("Attention pattern", "the ablated head, clean run", slot("attention"), { class: "nbx-panel nbx-result nbx-attn-panel nbx-hidden", "data-nb": "attention" });
  const staleNote = h("div", { class: "nbx-stale-note", "data-nb": "stale-note", role: "status" });
  const cleanNote = h("div", { class: "nbx-clean-note", "data-nb": "clean-note" },
    "nothing ablated: click a head, an L# label or an MLP cell (or focus the grid and press Enter) to see its self-repair");

  const rowA = h("div", { class: "nbx-row nbx-row-a" }, gridPanel, h("div", { class: "nbx-stack" }, staleNote, headPanel, logitPanel, cleanNote, wfPanel));
  const rowB = h("div", { class: "nbx-row nbx-row-b" }, neuronsPanel, gaugePanel, topkPanel);
  const rowC = h("div", { class: "nbx-row nbx-row-c" }, layersPanel, compPanel, attnPanel);
  const rowMap = h("div", { class: "nbx-row nbx-row-map" }, mountRepairMap({ model, tip, commit, view }));
  root.prepend(bar, toolbar, errorBox, promptRow, targetRow, rowA, rowB, rowC, rowMap);

  // --- drawing ---
  const ablation = () => model.get("ablation") || [];
  const position = () => {
    const p = model.get("position"), n = (model.get("tokens") || []).length;
    return p < 0 ? n - 1 : p;
  };

  function drawControls() {
    for (const [name, box] of [["method", method], ["positions", positions], ["scale", scale]]) {
      const s_ = box.querySelector("select");
      if (document.activeElement !== s_) s_.value = model.get(name);
    }
    if (document.activeElement !== source) source.value = model.get("source") || "";
    sourceField.classList.toggle("nbx-hidden", model.get("method") === "zero");
    const mode = customOpen ? "custom" : model.get("target_mode");
    for (const [m, b] of Object.entries(targetBtns)) b.classList.toggle("nbx-on", m === mode);
    const atLast = position() === (model.get("tokens") || []).length - 1;
    targetBtns.next.disabled = atLast;
    targetBtns.next.title = atLast ? "the last token has no next token: click an earlier token" : "the token that actually follows";
    if (document.activeElement !== targetInput) targetInput.value = model.get("target_text") || "";
    targetInput.classList.toggle("nbx-hidden", mode !== "custom");
    if (document.activeElement !== minusInput) minusInput.value = model.get("target_minus") || "";
    minusInput.classList.toggle("nbx-hidden", mode !== "custom");
    for (const b of modeSegs.children) b.classList.toggle("nbx-on", b.dataset.nb === `color-${model.get("color_by")}`);
    const modelName = model.get("model_name") || "", badge = root.querySelector("[data-nb=model]");
    badge.textContent = modelName.replace(/[\\/]+$/, "").split(/[\\/]/).pop();  // a folder: its name
    badge.title = modelName;
  }

  let tokensOpen = false;
  function drawTokens() {
    const tokens = model.get("tokens") || [], n = tokens.length, sel = position();
    const long = n > 24;
    const win = long && !tokensOpen ? [Math.max(0, Math.min(sel - 14, n - 20)), Math.min(n, Math.max(sel - 14, 0) + 20)] : null;
    const toggle = long ? h("button", { class: "nbx-btn nbx-btn-quiet nbx-tok-toggle", "data-nb": "tokens-toggle", "aria-expanded": tokensOpen ? "true" : "false",
      onclick: () => { tokensOpen = !tokensOpen; drawTokens(); } }, tokensOpen ? "collapse" : `all ${n} tokens`) : null;
    const tsr = model.get("token_sr") || {}, v = view();
    const colored = model.get("token_colors") && !v.clean_only && tsr.key && tsr.key === v.tokens_key;
    const values = colored ? Object.fromEntries(tsr.positions.map((p, k) => [p, { sr: tsr.sr[k], de: tsr.de[k], dl: tsr.dl[k] }])) : null;
    const srBtn = h("button", { class: "nbx-btn nbx-btn-quiet nbx-tok-toggle" + (model.get("token_colors") ? " nbx-on-quiet" : ""), "data-nb": "tokens-sr",
      "aria-pressed": model.get("token_colors") ? "true" : "false", title: "colour every token by the current ablation's self-repair when measured there (red: repaired, blue: the loss grew)",
      onclick: () => { model.set("token_colors", !model.get("token_colors")); model.save_changes(); } }, "SR per token");
    tokensBox.replaceChildren(renderTokens(
      { tokens, selected: model.get("position"), next: model.get("target_mode") === "next", window: win, extra: [srBtn, toggle], values },
      { onClick: (i) => {
        const n = (model.get("tokens") || []).length;
        const changes = { position: i };
        if (model.get("target_mode") === "next" && i === n - 1) changes.target_mode = "top";
        commit(changes);
      } }));
  }

  function gridValues() {
    const v = view(), g = v.grid, mode = model.get("color_by");
    if (!g) return null;
    if (mode === "delta") return { values: g.delta, mlp: g.mlp_delta, legend: "ΔDE under the current ablation (logits)" };
    if (mode === "sr") {
      const sw = model.get("sweep") || {};
      if (sw.key && sw.key === v.key) {
        const L = sw.n_layers || sw.heads.length;
        const legend = sw.done < L ? `self-repair when ablated alone \u2026 ${sw.done}/${L} layers` : "self-repair when ablated alone (logits)";
        return { values: sw.heads, mlp: sw.mlp, legend };
      }
      return { values: g.de, mlp: g.mlp_de, legend: "computing self-repair of every head\u2026", dim: true };
    }
    return { values: g.de, mlp: g.mlp_de, legend: "clean direct effect on the target (logits)" };
  }

  function tips(kind, l, hd) {
    const v = view(), g = v.grid || {}, sw = (model.get("sweep") || {});
    const swOk = sw.key && sw.key === v.key;
    const abl = v.clean_only ? null : true;
    if (kind === "head") {
      const lines = [`L${l}H${hd}  (head ${hd} of layer ${l})`, `clean DE ${fmt(g.de?.[l]?.[hd], 4)}`];
      if (abl) lines.push(`ablated DE ${fmt(g.de_ablated?.[l]?.[hd], 4)}`, `ΔDE ${fmt(g.delta?.[l]?.[hd], 4)}`);
      if (swOk && sw.heads[l][hd] !== null) lines.push(`self-repair if ablated alone ${fmt(sw.heads[l][hd], 4)}`);
      lines.push("click: ablate \u00b7 shift-click: add to set");
      return lines;
    }
    if (kind === "mlp") {
      const lines = [`MLP layer ${l}`, `clean DE ${fmt(g.mlp_de?.[l], 4)}`];
      if (abl) lines.push(`ablated DE ${fmt(g.mlp_de_ablated?.[l], 4)}`, `ΔDE ${fmt(g.mlp_delta?.[l], 4)}`);
      if (swOk && sw.mlp[l] !== null) lines.push(`self-repair if ablated alone ${fmt(sw.mlp[l], 4)}`);
      lines.push("click: ablate the MLP layer");
      return lines;
    }
    const lines = [`attention layer ${l}`, `clean DE ${fmt(g.attn_de?.[l], 4)}`];
    if (abl) lines.push(`ΔDE ${fmt(g.attn_delta?.[l], 4)}`);
    lines.push("click: ablate every head of this layer");
    return lines;
  }

  function drawGrid() {
    const gv = gridValues();
    for (const b of modeSegs.children) b.classList.toggle("nbx-on", b.dataset.nb === `color-${model.get("color_by")}`);
    gridEmpty.classList.toggle("nbx-hidden", !!gv);
    grid.el.classList.toggle("nbx-hidden", !gv);
    if (!gv) return;
    const selected = ablation();
    const v = view();
    const inView = new Set(v.ablated_ui || []);
    const exclude = model.get("color_by") === "delta" && !v.clean_only
      ? (name, l) => inView.has(name) || (name.startsWith("L") && inView.has(`attn${l}`)) : null;
    grid.update({ ...gv, selected, exclude });
    chips.replaceChildren(...(selected.length
      ? [h("span", { class: "nbx-muted" }, "ablated:"), ...selected.map((n) => h("button", { class: "nbx-chip", title: "remove", onclick: () => commit({ ablation: ablation().filter((x) => x !== n) }) }, n, h("span", { class: "nbx-chip-x" }, "\u00d7"))),
        h("button", { class: "nbx-btn nbx-btn-quiet", "data-nb": "clear", onclick: () => commit({ ablation: [] }) }, "clear"), undoBtn]
      : [h("span", { class: "nbx-muted" }, "nothing ablated \u2014 showing the clean run"), undoBtn]));
    undoBtn.disabled = !model.get("can_undo");
  }

  function drawPanels() {
    const v = view();
    root.dataset.seq = v.seq ?? -1;
    if (!v.logit) {
      for (const el_ of Object.values(slots)) el_.replaceChildren(h("div", { class: "nbx-empty" }, "measuring\u2026"));
      return;
    }
    slots.logit.replaceChildren(renderLogit(v.logit, { cleanOnly: v.clean_only }));
    root.classList.toggle("nbx-clean", !!v.clean_only);
    if (v.clean_only) {
      for (const k of ["headline", "waterfall", "gauge", "neurons"]) slots[k].replaceChildren();
    } else {
      drawHeadline();
      slots.waterfall.replaceChildren(renderWaterfall(v.waterfall));
      slots.gauge.replaceChildren(renderGauge(v.gauge));
      slots.neurons.replaceChildren(renderNeurons(v.neurons, { onClick: (name, additive) => commit({ ablation: toggleSelection(ablation(), name, additive) }) }));
    }
    slots.layers.replaceChildren(renderLayers(v.layers));
    slots.topk.replaceChildren(renderTopK(v.topk, { cleanOnly: v.clean_only }));
    drawComponents();
    const t = v.logit;
    targetInfo.replaceChildren(h("span", { class: "nbx-muted" }, `predicting after position ${v.position} \u2192 `),
      h("code", { class: "nbx-token" }, tokText(t.token)), ...(t.minus !== undefined ? [" \u2212 ", h("code", { class: "nbx-token" }, tokText(t.minus))] : []));
  }

  /** One row per head and MLP layer (as export.component_rows). */
  function componentRows() {
    const v = view(), g = v.grid, sw = model.get("sweep") || {};
    if (!g) return [];
    const swOk = sw.key && sw.key === v.key, abl = new Set(v.ablated_ui || []), rows = [];
    g.de.forEach((row, l) => {
      row.forEach((de, hd) => rows.push({ component: `L${l}H${hd}`, layer: l, head: hd, de_clean: de, delta_de: v.clean_only ? null : g.delta[l][hd],
        sr_alone: swOk ? sw.heads[l][hd] : null, ablated: abl.has(`L${l}H${hd}`) || abl.has(`attn${l}`) }));
      rows.push({ component: `mlp${l}`, layer: l, head: null, de_clean: g.mlp_de[l], delta_de: v.clean_only ? null : g.mlp_delta[l],
        sr_alone: swOk ? sw.mlp[l] : null, ablated: abl.has(`mlp${l}`) });
    });
    return rows;
  }

  function drawComponents() {
    if (!view().grid) return;
    const nothing = view().clean_only && compState.sort === "delta_de";  // no ΔDE without an ablation
    slots.components.replaceChildren(renderComponents(componentRows(), {
      ...compState, sort: nothing ? "de_clean" : compState.sort,
      onSort: (k) => { compState.desc = compState.sort === k ? !compState.desc : true; compState.sort = k; drawComponents(); },
      onMore: () => { compState.limit = 0; drawComponents(); },
      onClick: (name, additive) => commit({ ablation: toggleSelection(ablation(), name, additive) }),
    }));
  }

  function drawHeadline() {
    const v = view();
    for (const b of primeSegs.children) b.classList.toggle("nbx-on", (b.dataset.nb === "sr-prime") === srPrime);
    if (v.headline && !v.clean_only) slots.headline.replaceChildren(renderHeadline(v.headline, { prime: srPrime, ablated: v.ablated_ui }));
  }

  /** After a failed request the panels still show the last good result: dim and label them. */
  function drawOutdated() {
    const v = view(), err = model.get("error");
    const outdated = !!err && v.seq !== undefined && (model.get("done_seq") ?? -1) > v.seq;
    root.classList.toggle("nbx-outdated", outdated);
    root.dataset.outdated = outdated ? "1" : "0";
    staleNote.replaceChildren(...(outdated ? [h("strong", null, "stale: "),
      `these panels still show the last good result (target `, h("code", { class: "nbx-token" }, tokText(v.logit?.token)),
      `, ablated ${(v.ablated_ui || []).join(" + ") || "nothing"}); the current input failed \u2014 see the message above`] : []));
  }

  function drawStatus() {
    drawOutdated();
    const err = model.get("error");
    errorBox.textContent = err || "";
    errorBox.classList.toggle("nbx-hidden", !err);
    const busy = model.get("busy") || stale();
    root.classList.toggle("nbx-busy", busy);
    root.dataset.busy = busy ? "1" : "0";
    root.dataset.requestSeq = model.get("request_seq") || 0;
    root.dataset.doneSeq = model.get("done_seq") ?? -1;
    root.classList.toggle("nbx-stale", stale());
    if (!status.text.textContent.startsWith("export") || !busy) status.text.textContent = busy ? (model.get("remote_status") || "measuring\u2026") : (model.get("status") || "");
  }

  /** The attention panel: shown while exactly the head whose pattern arrived is ablated. */
  function drawAttention() {
    const a = model.get("attention") || {}, abl = ablation();
    const show = !!a.key && abl.length === 1 && abl[0] === headName(a.layer, a.head);
    attnPanel.classList.toggle("nbx-hidden", !show);
    attnPanel.querySelector(".nbx-panel-title").textContent = show ? `Attention pattern of L${a.layer}H${a.head}` : "Attention pattern";
    slots.attention.replaceChildren(...(show ? [renderAttention(a, { tip })] : []));
  }

  function drawAll() { drawControls(); drawTokens(); drawGrid(); drawStatus(); }

  const on = (names, fn) => names.split(" ").forEach((n) => model.on(`change:${n}`, fn));
  on("view", () => {
    const t0 = performance.now();
    drawPanels(); drawGrid(); drawStatus(); drawTokens();
    root.dataset.renderMs = (performance.now() - t0).toFixed(1);
  });
  on("tokens prompt position target_mode", () => { drawTokens(); drawControls(); });
  on("token_sr token_colors", drawTokens);
  on("ablation sweep color_by can_undo", drawGrid);
  on("sweep", drawComponents);
  on("attention ablation", drawAttention);
  on("method source positions scale target_text target_minus model_name", drawControls);
  on("busy error status remote_status request_seq done_seq", drawStatus);

  const onMsg = (msg, buffers) => {
    if (msg && msg.type === "code") { copyCode(root, msg.code, status.text); return; }
    if (!msg || msg.type !== "export") return;
    const blob = new Blob(buffers.map((b) => (b.buffer ? b.buffer : b)), { type: msg.mime });
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: msg.filename, style: { display: "none" } });
    root.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
    status.text.textContent = `saved ${msg.filename}`;
  };
  model.on("msg:custom", onMsg);

  drawAll();
  drawPanels();
  drawAttention();
  return () => model.off("msg:custom", onMsg);
}

// Explorer → code: the cell goes to the clipboard (a widget cannot insert notebook cells);
// where the clipboard is refused, a selected text box shows it for Ctrl-C.
function copyCode(root, code, statusText) {
  root.dataset.code = code;
  const fallback = () => {
    const box = h("textarea", { class: "nbx-code", "data-nb": "code-text", readonly: "", rows: 8 });
    box.value = code;
    root.querySelector(".nbx-code")?.remove();
    root.append(box);
    box.select();
    statusText.textContent = "code below: press Ctrl-C to copy it";
  };
  if (!navigator.clipboard?.writeText) return fallback();
  navigator.clipboard.writeText(code).then(
    () => { statusText.textContent = "copied a code cell: paste it into a new cell"; }, fallback);
}

export default {
  render({ model, el }) {
    return model.get("_kind") === "explorer" ? renderExplorer(model, el) : renderStandalone(model, el);
  },
};
