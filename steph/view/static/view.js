// stephctl view: the page's logic. Reads /api/*, shows the slide with OpenSeadragon and the
// attention overlay as a second image stretched over the slide's full extent (x = 0, width = 1
// in viewport units, like the slide itself), so both share the level-0 coordinate frame.
"use strict";

const state = {
  target: null, method: null, patient: null, slides: [], slide: null,
  viewer: null, overlay: null, overlayMethod: null, ready: false, error: null,
};
window.stephView = state; // for the browser test and the curious

const $ = (id) => document.getElementById(id);
const q = (params) => new URLSearchParams(params).toString();
const fmt = (x, digits = 3) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
const el = (tag, props = {}, children = []) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error + (body.hint ? ` (${body.hint})` : ""));
  return body;
}

function status(text) { $("status").textContent = text; }

async function start() {
  const info = await api("/api/target");
  state.target = info.target;
  $("title").textContent = `stephctl view: ${info.target}`;
  document.title = `${info.target}: stephctl view`;
  for (const m of info.methods) $("method").append(el("option", { value: m, textContent: m }));
  const steph = info.methods.find((m) => m === "steph" || m.startsWith("steph-"));
  state.method = steph || info.methods[0];
  $("method").value = state.method;
  $("method").onchange = () => { state.method = $("method").value; loadPatients(); };
  $("slide").onchange = () => showSlide($("slide").value);
  $("overlay-on").onchange = applyOpacity;
  $("opacity").oninput = applyOpacity;
  $("overlay-method").onchange = () => { state.overlayMethod = $("overlay-method").value; showSlide(state.slide.slide_id); };
  state.viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/openseadragon/images/",
    showNavigator: true,
    maxZoomPixelRatio: 2,
    imageSmoothingEnabled: false, // the overlay's 4 x 4 pixels per patch stay sharp squares
    timeout: 60000,
  });
  await loadPatients();
}

async function loadPatients() {
  const rows = await api("/api/patients?" + q({ method: state.method }));
  const body = $("patients").querySelector("tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr", {}, [
      el("td", { textContent: r.patient_id }),
      el("td", { textContent: r.fold }),
      el("td", { textContent: fmt(r.risk) }),
      el("td", { textContent: r.group, className: r.group }),
    ]);
    tr.dataset.patient = r.patient_id;
    tr.onclick = () => showPatient(r.patient_id);
    body.append(tr);
  }
  const keep = rows.find((r) => r.patient_id === state.patient);
  if (rows.length) await showPatient(keep ? keep.patient_id : rows[0].patient_id);
}

async function showPatient(pid) {
  state.ready = false;
  state.patient = pid;
  for (const tr of $("patients").querySelectorAll("tbody tr")) tr.classList.toggle("current", tr.dataset.patient === pid);
  const p = await api("/api/patient?" + q({ method: state.method, patient: pid }));
  state.info = p;
  $("patient-title").textContent = `Patient ${p.patient_id}`;
  const facts = [["method", p.method], ["fold", p.fold], ["risk", fmt(p.risk, 4)], ["group", p.group],
    ["slides", p.slides.map((s) => s.slide_id).join(", ")]];
  $("facts").querySelector("tbody").replaceChildren(...facts.map(([k, v]) => el("tr", {}, [el("td", { textContent: k }), el("td", { textContent: v })])));
  $("comparison").querySelector("tbody").replaceChildren(...p.comparison.map((c) => el("tr", {}, [
    el("td", { textContent: c.method }), el("td", { textContent: fmt(c.risk) }),
    el("td", { textContent: `${c.rank} of ${c.of}` }), el("td", { textContent: c.group, className: c.group }),
  ])));
  const withAttention = p.comparison.filter((c) => c.attention).map((c) => c.method);
  $("overlay-method").replaceChildren(...withAttention.map((m) => el("option", { value: m, textContent: m })));
  state.overlayMethod = withAttention.includes(p.method) ? p.method : withAttention[0] || null;
  if (state.overlayMethod) $("overlay-method").value = state.overlayMethod;
  showTransfer(p.transfer);
  state.slides = p.slides;
  $("slide").replaceChildren(...p.slides.map((s) => el("option", { value: s.slide_id, textContent: `${s.slide_id} (${s.patches} patches)` })));
  showTop(withAttention);
  await showSlide(p.slides[0].slide_id);
}

function showTransfer(t) {
  const box = $("transfer");
  if (!t) { box.textContent = "- (no STEPH coefficients for this method)"; return; }
  if (t.none) {
    box.replaceChildren(el("b", { textContent: "no transfer for this patient" }),
      document.createTextNode(": every source's weight w is 0, so the merged encoder is theta0 alone."));
    return;
  }
  const top = Math.max(...t.w, 1e-12);
  const rows = t.sources.map((s, i) => el("tr", {}, [
    el("td", { textContent: (t.selected[i] ? "* " : "") + s }),
    el("td", {}, [el("span", { className: "bar" + (t.selected[i] ? " selected" : ""), style: `width:${(60 * t.w[i]) / top}px` }), document.createTextNode(" " + fmt(t.w[i]))]),
    el("td", { textContent: fmt(t.lambda[i]) }),
  ]));
  box.replaceChildren(el("table", {}, [
    el("thead", {}, [el("tr", {}, [el("th", { textContent: "source" }), el("th", { textContent: "w" }), el("th", { textContent: "lambda" })])]),
    el("tbody", {}, rows),
  ]), el("p", { className: "note", textContent: "* = selected (top-k); lambda 1 = all target, 0 = all source" }));
}

async function showTop(methods) {
  const box = $("top");
  box.replaceChildren();
  for (const m of methods) {
    const column = el("div", { className: "column" }, [el("h4", { textContent: m })]);
    box.append(column);
    api("/api/top?" + q({ method: m, fold: state.info.fold, patient: state.patient })).then((rows) => {
      for (const r of rows.slice(0, 4)) {
        const slide = state.slides.find((s) => s.slide_id === r.slide_id);
        if (!slide || !slide.image) { column.append(el("div", { className: "note", textContent: `(${r.x}, ${r.y}) a=${fmt(r.attention, 4)}` })); continue; }
        const img = el("img", { src: "/patch.jpeg?" + q({ slide: r.slide_id, x: r.x, y: r.y }), title: `${r.slide_id} (${r.x}, ${r.y}) attention ${fmt(r.attention, 4)}` });
        img.onclick = () => goTo(r.slide_id, r.x, r.y, slide.patch_size_level0);
        column.append(img);
      }
    }).catch((e) => column.append(el("div", { className: "note", textContent: e.message })));
  }
}

async function goTo(slideId, x, y, side) {
  if (state.slide.slide_id !== slideId) { $("slide").value = slideId; await showSlide(slideId); }
  const item = state.viewer.world.getItemAt(0);
  const rect = item.imageToViewportRectangle(x - side, y - side, 3 * side, 3 * side);
  state.viewer.viewport.fitBounds(rect);
}

function overlayUrl(slide) {
  return "/overlay.png?" + q({ method: state.overlayMethod, fold: state.info.fold, patient: state.patient, slide: slide.slide_id });
}

function showSlide(slideId) {
  const slide = state.slides.find((s) => s.slide_id === slideId);
  state.slide = slide;
  state.ready = false;
  state.overlay = null;
  status(slide.image ? "" : "no slide image (features only): the attention is drawn on the patch grid");
  return new Promise((resolve) => {
    const viewer = state.viewer;
    viewer.addOnceHandler("open", () => {
      if (!state.overlayMethod || !slide.image) { state.overlay = slide.image ? null : viewer.world.getItemAt(0); state.ready = true; resolve(); return; }
      viewer.addTiledImage({
        tileSource: { type: "image", url: overlayUrl(slide) },
        x: 0, y: 0, width: 1,
        opacity: currentOpacity(),
        success: (event) => { state.overlay = event.item; state.ready = true; resolve(); },
        error: (event) => { state.error = String(event.message); status("overlay: " + event.message); state.ready = true; resolve(); },
      });
    });
    viewer.addOnceHandler("open-failed", (event) => { state.error = String(event.message); status(event.message); state.ready = true; resolve(); });
    viewer.open(slide.image ? `/dzi/${encodeURIComponent(slide.slide_id)}.dzi` : { type: "image", url: overlayUrl(slide) });
  });
}

function currentOpacity() { return $("overlay-on").checked ? Number($("opacity").value) : 0; }

function applyOpacity() {
  if (state.overlay && state.slide && state.slide.image) state.overlay.setOpacity(currentOpacity());
}

start().catch((e) => { state.error = e.message; status(e.message); });
