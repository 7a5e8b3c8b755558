// nbtools widgets — shared helpers (plain ESM, concatenated with panels.js and app.js).
// No dependencies: DOM + SVG built by hand.

const SVG_NS = "http://www.w3.org/2000/svg";

/** HTML element: h("div", {class: "x", onclick: f}, child, "text", ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** SVG element, same signature as h(). */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const MINUS = "\u2212";

/** Signed number with `d` decimals and a real minus sign; "–" for missing values. */
function fmt(x, d = 3, signed = true) {
  if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
  const t = Math.abs(x).toFixed(d);
  if (Number(t) === 0) return (signed ? "\u00b1" : "") + t;
  return (x < 0 ? MINUS : signed ? "+" : "") + t;
}

/** A probability as a percentage with about three significant digits. */
function fmtP(p) {
  if (p === null || p === undefined) return "\u2013";
  const v = 100 * p;
  if (v >= 10) return v.toFixed(1) + "%";
  if (v >= 1) return v.toFixed(2) + "%";
  if (v >= 0.001) return v.toPrecision(2) + "%";
  return "<0.001%";
}

/** Show a token's whitespace: leading space as a dot, newlines and tabs as symbols. */
function tokText(t) {
  if (t === null || t === undefined) return "?";
  return String(t).replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
}

// Diverging colour scale (blue = negative, white = 0, red = positive), perceptually tuned stops.
const NEG = [[247, 247, 247], [209, 229, 240], [146, 197, 222], [67, 147, 195], [33, 102, 172], [5, 48, 97]];
const POS = [[247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];

function ramp(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  return c;
}

/** [r, g, b] for value v on a symmetric scale [-vmax, vmax]. */
function divergingRGB(v, vmax) {
  if (v === null || v === undefined || !(vmax > 0)) return [238, 238, 238];
  const t = Math.abs(v) / vmax;
  return ramp(v < 0 ? NEG : POS, Math.sqrt(Math.min(1, t)) * 0.92);
}

function rgb(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }

/** Dark text on light cells, light text on dark ones. */
function inkFor(c) { return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? "#222" : "#fff"; }

function absMax(...arrays) {
  let m = 0;
  for (const a of arrays) for (const v of [a].flat(Infinity)) if (v !== null && v !== undefined) m = Math.max(m, Math.abs(v));
  return m;
}

/** "Nice" tick values covering [lo, hi]. */
function ticks(lo, hi, n = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((k) => k >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** A floating tooltip attached to a root element. */
function makeTip(root) {
  const tip = h("div", { class: "nbx-tip", role: "tooltip" });
  root.append(tip);
  return {
    show(evt, lines) {
      tip.replaceChildren(...lines.map((l, i) => h("div", { class: i === 0 ? "nbx-tip-title" : "nbx-tip-row" }, l)));
      tip.style.display = "block";
      const box = root.getBoundingClientRect();
      const x = evt.clientX - box.left + 14, y = evt.clientY - box.top + 12;
      const maxX = root.clientWidth - tip.offsetWidth - 4;
      tip.style.left = Math.max(0, Math.min(x, maxX)) + "px";
      tip.style.top = y + "px";
    },
    hide() { tip.style.display = "none"; },
  };
}

/** Wire hover tooltip behaviour on an element. lines() is evaluated lazily. */
function hover(el, tip, lines) {
  if (!tip) return el;
  el.addEventListener("mousemove", (e) => tip.show(e, lines()));
  el.addEventListener("mouseleave", () => tip.hide());
  return el;
}

/** Click semantics shared by the grids: plain click selects only `name` (or clears it if it
 *  was the only selection); shift/ctrl/meta-click toggles `name` in the set. */
function toggleSelection(current, name, additive) {
  const set = new Set(current || []);
  if (additive) {
    if (set.has(name)) set.delete(name); else set.add(name);
    return [...set];
  }
  return set.size === 1 && set.has(name) ? [] : [name];
}

/** Panel frame with a title, optional subtitle and body. */
function panel(title, sub, body, attrs = {}) {
  return h("section", { class: "nbx-panel", ...attrs },
    h("header", { class: "nbx-panel-head" }, h("span", { class: "nbx-panel-title" }, title),
      sub ? h("span", { class: "nbx-panel-sub" }, sub) : null),
    body);
}
