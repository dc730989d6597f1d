// autograd_magic's interactive view (an anywidget ESM module).
//
// Security: user strings (names, code, messages) reach the DOM only through
// text nodes and setAttribute, never HTML strings. The one markup we insert is
// Graphviz's SVG, which escapes label text itself; it is parsed in an inert
// document and stripped of scripts, event handlers and external links.

const TAB_TITLES = {
  graph: "Graph", variables: "Variables", gradients: "Gradients",
  diagnostics: "Diagnostics", timeline: "Timeline", torchviz: "torchviz", replay: "Backward replay",
  training: "Training",
};
const ZOOMS = [0.25, 0.4, 0.55, 0.7, 0.85, 1, 1.25, 1.5, 2, 3];
const MAX_VALUES = 12;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function parseSvg(text) {
  const doc = new DOMParser().parseFromString(text, "text/html"); // inert: nothing in it runs
  const svg = doc.querySelector("svg");
  if (!svg) return null;
  svg.querySelectorAll("script, foreignObject, iframe, object, embed").forEach((el) => el.remove());
  for (const el of [svg, ...svg.querySelectorAll("*")]) {
    for (const attr of [...el.attributes]) {
      const name = attr.name.toLowerCase();
      const link = name === "href" || name.endsWith(":href");
      if (name.startsWith("on") || (link && !attr.value.startsWith("#"))) el.removeAttribute(attr.name);
    }
  }
  return document.importNode(svg, true);
}

const shapeText = (shape) => (shape && shape.length ? `(${shape.join(", ")})` : "scalar");
const lineText = (line) => (line === null || line === undefined ? "—" : String(line));
const num = (value) => (typeof value === "number" ? String(Number(value.toPrecision(4))) : String(value));
const nodeNames = (node) => (node.name ? node.name.split(", ") : []);

function sizeText(bytes) { // as report.model.size_text writes it
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
  return unit ? `${Number(size.toPrecision(3))} ${units[unit]}` : `${Math.floor(size)} bytes`;
}

// opaque, so the theme's text colour keeps its contrast: white to orange in a light theme, dark to deep orange.
// The two ends are CSS variables of the theme (widget.css), so a fill follows a theme switched after it was set.
function memoryFill(t) {
  const share = Math.round(100 * t);
  return `color-mix(in srgb, var(--agm-kept-most) ${share}%, var(--agm-kept-least))`;
}

function flat(values, out = []) {
  if (Array.isArray(values)) values.forEach((v) => flat(v, out));
  else out.push(values);
  return out;
}

function valuesText(values, shape) {
  if (values === null || values === undefined) return `<${shapeText(shape)} values not listed>`;
  const all = flat(values);
  const shown = all.slice(0, MAX_VALUES).map((v) => (typeof v === "number" ? Number(v.toPrecision(4)) : v));
  const more = all.length > MAX_VALUES ? ", …" : "";
  return shape && shape.length ? `[${shown.join(", ")}${more}]` : shown.join(", ");
}

// messages are written with Markdown `code` spans: show them as <code>, built from text nodes
function withCode(text) {
  return String(text || "").split(/`([^`\n]+)`/).map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

function table(headers, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))));
}

function sourceView(report, line) {
  const lines = (report.source || "").replace(/\n$/, "").split("\n");
  const pre = h("pre", { class: "agm-source", "aria-label": "cell source" }, lines.map((text, i) => {
    const number = i + 1;  // the report's lines are the source's own: line 1 is its first
    const here = number === line;
    return h("div", { class: here ? "agm-line agm-here" : "agm-line", "aria-current": here ? "true" : null },
      h("span", { class: "agm-lno" }, here ? `▶${number}` : String(number)), text);
  }));
  // whenever it comes into view: a notebook that scrolled the cell away may have detached it, losing its scroll
  if (typeof IntersectionObserver === "function") {
    new IntersectionObserver((seen) => { if (seen.some((e) => e.isIntersecting)) showHere(pre); }).observe(pre);
  } else requestAnimationFrame(() => showHere(pre));
  return pre;
}

// the excerpt scrolls (within itself, not the page) so its marked line sits in the middle
function showHere(pre) {
  const here = pre.querySelector(".agm-here");
  if (!here || !pre.clientHeight) return;
  const offset = here.getBoundingClientRect().top - pre.getBoundingClientRect().top;
  pre.scrollTop += offset - (pre.clientHeight - here.offsetHeight) / 2;
}

// ---------------------------------------------------------------------------------------------
// the report and its drawings are sent again when a click folds or unfolds a module: draw it afresh,
// keeping the other traits (once, when both change in one message)
function render({ model, el }) {
  const found = { query: "", refocus: false, opened: new Set(), opening: null }; // the find box, kept across redraws
  let cleanup = draw({ model, el, found });
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => { pending = false; cleanup(); el.replaceChildren(); cleanup = draw({ model, el, found }); });
  };
  model.on("change:report", redraw);
  model.on("change:drawings", redraw);
  return () => { cleanup(); model.off("change:report", redraw); model.off("change:drawings", redraw); };
}

function draw({ model, el, found }) {
  const report = model.get("report");
  const graphs = report.graphs || [];
  const drawings = model.get("drawings") || [];
  const ops = report.ops || [];
  const lastStep = ops.length ? ops[ops.length - 1].seq : 0;
  const tabs = ["graph", "variables", "gradients", "diagnostics", "timeline"];
  if (report.torchviz) tabs.push("torchviz");
  if ((report.backward_steps || []).length) tabs.splice(1, 0, "replay");
  if (report.training) tabs.push("training");
  let timer = null;
  let zoom = 1;
  let byMemory = false; // the toggle: fill each node by the bytes it keeps for backward
  let zoomed = false; // until the user zooms, each drawing is fitted to the width

  const root = h("div", { class: "agm-w" });
  const tablist = h("div", { class: "agm-tabs", role: "tablist", "aria-label": "autograd report panels" });
  const panels = {};
  const tabButtons = {};
  for (const name of tabs) {
    tabButtons[name] = h("button", {
      class: "agm-tab", role: "tab", type: "button",
      onclick: () => setTrait("tab", name), onkeydown: (e) => tabKey(e, name),
    }, TAB_TITLES[name]);
    tablist.append(tabButtons[name]);
    panels[name] = h("div", { class: "agm-panel", role: "tabpanel", "aria-label": TAB_TITLES[name] });
  }
  root.append(h("div", { class: "agm-summary" }, report.summary || ""));
  for (const hint of report.hints || []) root.append(h("div", { class: "agm-hint" }, hint));
  if (report.error) {
    const e = report.error;
    root.append(h("div", { class: "agm-raised" }, `✖ The cell raised ${e.type} at line ${lineText(e.line)}: `,
      h("code", {}, (e.message || "").split("\n")[0])));
  }
  root.append(tablist, ...Object.values(panels));
  el.append(root);

  // the graph stage moves into whichever of Graph / Diagnostics / Timeline is on show
  const picker = graphs.length > 1 ? h("select", { "aria-label": "graph", onchange: (e) => setTrait("graph", Number(e.target.value)) },
    drawings.map((d, i) => h("option", { value: i }, d.title))) : null;
  const zoomLabel = h("span", { class: "agm-zoom", "aria-live": "polite" }, "");
  const finder = findBox();
  const toolbar = h("div", { class: "agm-toolbar" }, picker, finder.box,
    h("button", { type: "button", "aria-label": "zoom out", title: "zoom out (or Ctrl + wheel)", onclick: () => zoomBy(-1) }, "−"),
    h("button", { type: "button", "aria-label": "zoom in", title: "zoom in (or Ctrl + wheel)", onclick: () => zoomBy(1) }, "+"),
    h("button", { type: "button", title: "fit the drawing to the width", onclick: () => setZoom(fitZoom(), true) }, "fit"),
    h("button", { type: "button", title: "draw at 100%", onclick: () => setZoom(1, true) }, "actual size"), zoomLabel);
  const memoryToggle = graphs.some((g) => g.memory) ? h("button", {
    type: "button", class: "agm-memory-toggle", "aria-pressed": "false",
    title: "colour each node by the memory it keeps for backward (darker: more)",
    onclick: () => { byMemory = !byMemory; memoryToggle.setAttribute("aria-pressed", String(byMemory)); drawMemory(); paint(); },
  }, "memory kept") : null;
  if (memoryToggle) toolbar.append(memoryToggle);
  const memoryBox = h("div", { class: "agm-memory", "aria-label": "memory kept for backward" });
  const title = h("div", { class: "agm-graph-title" });
  const scroller = h("div", { class: "agm-scroll", tabindex: "0", "aria-label": "graph drawing (scroll; Ctrl + wheel zooms)" });
  const details = h("aside", { class: "agm-details", "aria-live": "polite" });
  const legend = h("ul", { class: "agm-legend", "aria-label": "legend" }, (report.legend || []).map((item) =>
    h("li", {}, h("span", { class: "agm-sw", style: `background:${item.fill || "transparent"};border:${item.border}` }), item.text)));
  const stage = h("div", { class: "agm-stage" }, toolbar, title, h("div", { class: "agm-split" }, scroller, details), memoryBox, legend);
  // with no graph the Graph tab says so in one line: no toolbar, empty box or legend
  const noGraph = h("p", { class: "agm-hint agm-nograph" },
    "No autograd graph in this cell: nothing that requires grad was computed (or --no-graph).");
  scroller.addEventListener("wheel", (e) => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    zoomBy(e.deltaY < 0 ? 1 : -1);
  }, { passive: false });

  function setTrait(name, value) {
    model.set(name, value);
    model.save_changes();
  }

  function tabKey(event, name) {
    const i = tabs.indexOf(name);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = tabs[(next + tabs.length) % tabs.length];
    setTrait("tab", target);
    tabButtons[target].focus();
  }

  // -- find: a name, an op, a module or a parameter; Enter goes to the next match -------------------
  // A match inside a folded module marks the module's node; Enter on it unfolds it (through the kernel,
  // like a click), and the redrawn graph goes to the match inside.
  function findBox() {
    const input = h("input", {
      type: "search", class: "agm-find", placeholder: "find: name, op, module, parameter", value: found.query,
      "aria-label": "find in the graph: a variable, an op, a module or a parameter (Enter: next match, Shift+Enter: previous)",
      oninput: (e) => { found.query = e.target.value; found.opening = null; found.opened.clear(); search(true); },
      onkeydown: (e) => {
        if (e.key === "Enter") { e.preventDefault(); step(e.shiftKey ? -1 : 1); }
        if (e.key === "Escape" && input.value) { e.preventDefault(); input.value = found.query = ""; search(true); }
      },
    });
    const status = h("span", { class: "agm-find-status", "aria-live": "polite" });
    let matches = [];
    let current = -1;

    function targets() { // every node and module box of the drawing, with the words it answers to
      if (!svg) return [];
      const out = [];
      const rows = currentGraph().modules || [];
      for (const g of svg.querySelectorAll("g.cluster")) {
        const m = /^m(\d+)$/.exec(g.id);
        const row = m ? rows[Number(m[1])] : null;
        if (row) out.push({ g, own: [row.name, row.cls, row.label], inside: [], module: null });
      }
      for (const node of currentGraph().nodes) {
        const g = svg.querySelector(`g.node[id="n${node.id}"]`);
        const folded = node.kind === "module" ? node.module : null;
        if (g) out.push({ g, own: [...nodeNames(node), node.label], inside: folded ? node.holds || [] : [], module: folded });
      }
      return out;
    }

    function top(g) {
      try { return g.getBBox().y; } catch (error) { return 0; } // not laid out (a hidden panel): keep the order
    }

    function search(jump) {
      const query = found.query.trim().toLowerCase();
      const hit = (texts) => texts.some((t) => t && String(t).toLowerCase().includes(query));
      matches = !query ? [] : targets().map((t) => ({ ...t, hidden: !hit(t.own) }))
        .filter((t) => !t.hidden || hit(t.inside));
      matches = matches.map((t, i) => ({ ...t, i, y: top(t.g) })).sort((a, b) => a.y - b.y || a.i - b.i);
      const opened = found.opening;
      current = matches.length ? Math.max(0, opened ? matches.findIndex((t) => inModule(t, opened)) : 0) : -1;
      paintFound();
      if (jump || opened) reveal();
    }

    function settle() { // after a redraw, once the drawing is laid out: go to the match the unfold was for
      if (found.opening || found.refocus) search(false);
    }

    const inModule = (t, name) => { // a drawn node of the unfolded module (its id names it: see to_dot)
      const node = findNode(Number((/^n(\d+)$/.exec(t.g.id) || [])[1]));
      return !!node && !t.hidden && !!node.module && (node.module === name || node.module.startsWith(name + "."));
    };

    function step(direction) {
      if (!matches.length) return search(true);
      const here = matches[current];
      if (direction > 0 && here && here.hidden && !found.opened.has(here.module)) return unfold(here.module);
      current = (current + direction + matches.length) % matches.length;
      paintFound();
      reveal();
    }

    function unfold(module) {
      found.opened.add(module); // once per module and query: a match that stays folded is not asked for again
      found.opening = module;
      found.refocus = true; // the redraw replaces this box: typing goes on in the new one
      status.textContent = `unfolding ${module}…`;
      foldModule(module, true);
    }

    function paintFound() {
      if (svg) svg.querySelectorAll(".agm-found, .agm-found-current").forEach((g) => g.classList.remove("agm-found", "agm-found-current"));
      matches.forEach((t, i) => t.g.classList.add(i === current ? "agm-found-current" : "agm-found"));
      const here = matches[current];
      status.textContent = !found.query.trim() ? "" : !matches.length ? "no match"
        : `${current + 1} of ${matches.length}` + (here.hidden ? ` · inside folded ${here.module}: Enter unfolds it` : "");
    }

    function reveal() { // scroll the drawing (not the page) so the current match is in the middle
      const here = matches[current];
      if (!scroller.clientHeight) return; // not laid out yet: settle() comes back
      if (found.refocus) input.focus();
      found.opening = null;
      found.refocus = false;
      if (!here) return;
      const r = here.g.getBoundingClientRect();
      const s = scroller.getBoundingClientRect();
      scroller.scrollLeft += r.left - s.left - (scroller.clientWidth - r.width) / 2;
      scroller.scrollTop += r.top - s.top - (scroller.clientHeight - r.height) / 2;
    }

    return { box: h("span", { class: "agm-findbox", role: "search" }, input, status), search, settle };
  }

  // -- the drawing ------------------------------------------------------------------------------
  let svg = null;
  let base = null; // natural size in px

  function drawGraph() {
    const index = model.get("graph");
    const drawing = drawings[index];
    scroller.replaceChildren();
    svg = null;
    legend.hidden = !(drawing && drawing.svg);
    if (!drawing) {
      title.textContent = "";
      scroller.append(h("p", { class: "agm-hint" }, "No autograd graph in this cell (nothing that requires grad was computed, or --no-graph)."));
      return;
    }
    title.textContent = ((graphs[index] || {}).modules || []).length
      ? `${drawing.title} · click a module's box to fold it, a folded module to unfold it` : drawing.title;
    if (!drawing.svg) {
      scroller.append(h("p", { class: "agm-hint" }, drawing.hint || "graph not rendered"),
        h("details", {}, h("summary", {}, "DOT source"), h("pre", {}, drawing.dot || "")));
      return;
    }
    svg = parseSvg(drawing.svg);
    if (!svg) return;
    const box = svg.viewBox && svg.viewBox.baseVal;
    base = box && box.width ? { w: box.width * 4 / 3, h: box.height * 4 / 3 } : { w: 600, h: 400 }; // pt -> px
    svg.setAttribute("role", "group");
    svg.setAttribute("aria-label", drawing.title);
    for (const g of svg.querySelectorAll("g.node")) {
      const id = /^n(\d+)$/.exec(g.id);
      if (!id) continue;
      const tip = g.querySelector("title");
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("aria-label", tip ? tip.textContent.replace(/\n/g, "; ") : g.id);
      g.addEventListener("click", () => clickNode(Number(id[1])));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); clickNode(Number(id[1])); }
      });
    }
    const rows = currentGraph().modules || [];
    for (const g of svg.querySelectorAll("g.cluster")) { // a module's box: a click folds it to one node
      const m = /^m(\d+)$/.exec(g.id);
      const row = m ? rows[Number(m[1])] : null;
      if (!row) continue;
      g.classList.add("agm-foldable");
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("aria-label", `fold ${row.name} into one node`);
      const tip = svgTitle(`${row.name} (${row.cls}): click to fold it into one node`);
      g.prepend(tip);
      g.addEventListener("click", () => foldModule(row.name, false));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); foldModule(row.name, false); }
      });
    }
    scroller.append(svg);
    setZoom(zoomed ? zoom : fitZoom());
    drawMemory();
    paint();
    finder.search(false);
  }

  // the "memory kept for backward" line under the drawing, its biggest holders (a click selects one)
  function drawMemory() {
    const graph = currentGraph();
    const lines = graph.memory_text || [];
    memoryBox.replaceChildren();
    memoryBox.hidden = !lines.length;
    if (!lines.length) return;
    const holders = (graph.memory && graph.memory.holders) || [];
    memoryBox.append(h("div", {}, withCode(lines[0])));
    const list = h("ol", { class: "agm-holders" }, lines.slice(1).map((line, i) => {
      const node = holders[i] && holders[i].node;
      const show = node != null ? h("button", {
        type: "button", class: "agm-link", title: "select this node", onclick: () => selectNode(node),
      }, "show") : null;
      return h("li", {}, withCode(line.trim()), show);
    }));
    if (lines.length > 1) memoryBox.append(list);
    if (byMemory) {
      const most = Math.max(0, ...graph.nodes.map((n) => n.saved_bytes || 0));
      memoryBox.append(h("div", { class: "agm-hint" }, most
        ? `Nodes are coloured by what they keep for backward: the darkest keeps ${sizeText(most)}; faded ones keep nothing of their own.`
        : "No node keeps memory of its own for backward."));
    }
  }

  function fitZoom() {
    if (!base) return 1;
    const width = scroller.clientWidth || 700;
    return Math.max(ZOOMS[0], Math.min(1, (width - 12) / base.w));
  }

  function setZoom(value, manual = false) {
    zoom = value;
    zoomed = zoomed || manual;
    zoomLabel.textContent = `zoom ${Math.round(value * 100)}%`;
    if (!svg || !base) return;
    svg.setAttribute("width", `${base.w * value}px`);
    svg.setAttribute("height", `${base.h * value}px`);
  }

  function zoomBy(direction) {
    const current = zoom || 1;
    const next = direction > 0 ? ZOOMS.find((z) => z > current + 1e-6) : [...ZOOMS].reverse().find((z) => z < current - 1e-6);
    setZoom(next || current, true);
  }

  const currentGraph = () => graphs[model.get("graph")] || { nodes: [], edges: [] };
  const firstOpOnLine = new Map();
  for (const op of ops) if (!firstOpOnLine.has(op.line)) firstOpOnLine.set(op.line, op.seq);
  // leaves carry step 0 (made before autograd saw them): place them at the op on the line that bound them
  function stepOf(node) {
    const tensor = node.step ? null : (report.tensors || {})[nodeNames(node)[0]];
    return node.step || (tensor && firstOpOnLine.get(tensor.line)) || 0;
  }
  const findNode = (id) => currentGraph().nodes.find((n) => n.id === id);

  function flaggedNames() {
    const d = (report.diagnostics || [])[model.get("diagnostic")];
    return d ? new Set(d.names) : new Set();
  }

  // classes on the SVG: selected node, the selected diagnostic's nodes, and timeline dimming
  function paint() {
    if (!svg) return;
    const selected = model.get("selected");
    const flagged = flaggedNames();
    const step = model.get("tab") === "timeline" ? model.get("step") : Infinity;
    const lit = replay && model.get("tab") === "replay" ? replay.highlight() : { node: null, edges: new Set() };
    const later = new Set(currentGraph().nodes.filter((n) => stepOf(n) > step).map((n) => n.id));
    const most = Math.max(1, ...currentGraph().nodes.map((n) => n.saved_bytes || 0));
    for (const g of svg.querySelectorAll("g.node, g.edge")) {
      const node = /^n(\d+)$/.exec(g.id);
      const edge = /^e(\d+)_(\d+)$/.exec(g.id);
      const id = node ? Number(node[1]) : null;
      const info = node ? findNode(id) : null;
      g.classList.toggle("agm-selected", node !== null && id === selected);
      g.classList.toggle("agm-flag", !!info && nodeNames(info).some((n) => flagged.has(n)));
      const dim = (id !== null && later.has(id)) || (!!edge && edge.slice(1).some((x) => later.has(Number(x))));
      g.classList.toggle("agm-dim", dim);
      g.classList.toggle("agm-current", node !== null && id === lit.node);
      g.classList.toggle("agm-flow", !!edge && lit.edges.has(g.id));
      if (node) paintMemory(g, info, most);
    }
  }

  function paintMemory(g, info, most) {
    const shape = g.querySelector("path, polygon, ellipse");
    if (!shape) return;
    const kept = byMemory && info ? info.saved_bytes || 0 : 0;
    g.classList.toggle("agm-kept-none", byMemory && !kept);
    g.classList.toggle("agm-kept", !!kept); // its text takes the theme's colour, as the fill does
    // sqrt: a node keeping 1/100 of the most is still visibly tinted
    shape.style.fill = kept ? memoryFill(0.12 + 0.88 * Math.sqrt(kept / most)) : "";
  }

  function selectNode(id) {
    setTrait("selected", id);
  }

  function clickNode(id) { // a folded module opens; any other node is selected
    const node = findNode(id);
    selectNode(id);
    if (node && node.kind === "module" && node.module) foldModule(node.module, true);
  }

  let asked = 0;
  function foldModule(name, open) {
    asked += 1;
    title.textContent = `${open ? "unfolding" : "folding"} ${name}… (needs the running kernel)`;
    setTrait("fold_request", { graph: model.get("graph"), module: name, open, n: asked + Date.now() });
  }

  function showDetails() {
    const node = findNode(model.get("selected"));
    details.replaceChildren();
    if (!node) {
      details.append(h("p", { class: "agm-hint" }, "Click a node (or focus it and press Enter) for its details."));
      return;
    }
    const first = nodeNames(node)[0];
    const tensor = first ? (report.tensors || {})[first] : null;
    const grad = first ? (report.gradient_details || {})[first] : null;
    const graph = currentGraph();
    const link = (id) => {
      const other = findNode(id);
      return h("button", { type: "button", class: "agm-link", onclick: () => selectNode(id) },
        other ? `${other.name ? other.name + " " : ""}${other.label}` : `#${id}`);
    };
    const rows = [
      ["name", node.name || "(unnamed)"], ["grad_fn", node.label + (node.repeat > 1 ? ` ×${node.repeat}` : "")],
      ["kind", node.kind], [node.kind === "module" ? "output" : "shape", shapeText(node.shape)],
      ...(node.kind === "module" ? [["parameters", String(node.params || 0)]] : []),
      ["dtype", tensor ? `${tensor.dtype} on ${tensor.device}` : "—"],
      ["line", node.cell != null ? `In [${node.cell}] line ${lineText(node.line)}` : lineText(node.line)], ["code", node.code ? h("code", {}, node.code) : "—"],
      ["expression", node.expr ? h("code", {}, node.expr) : "—"],
      ["value", node.value_text || "—"],
      ["gradient", node.grad_text ? node.grad_text.replace(/^grad (= )?/, "")
        : grad ? valuesText(grad.values, grad.shape) : "—"],
      ["saved", node.saved_text && node.saved_text.length
        ? [...node.saved_text.map((s) => h("div", {}, withCode(s))),
          h("div", { class: "agm-hint" }, "kept for backward: its gradient formula needs these values")] : "—"],
      ["memory", node.kept_text || "—"],
      ["inputs", graph.edges.filter((e) => e[1] === node.id && e[0] !== node.id).map((e) => link(e[0]))],
      ["used by", graph.edges.filter((e) => e[0] === node.id && e[1] !== node.id).map((e) => link(e[1]))],
    ];
    if (grad && grad.before !== null && grad.before !== undefined) rows.splice(10, 0, ["grad before", valuesText(grad.before, grad.shape)]);
    details.append(h("h5", {}, "Selected node"), h("dl", {}, rows.flatMap(([k, v]) =>
      [h("dt", {}, k), h("dd", {}, Array.isArray(v) ? (v.length ? v : "—") : v)])));
  }

  // -- the panels ----------------------------------------------------------------------------------
  function fillVariables() {
    const rows = Object.entries(report.tensors || {}).map(([name, t]) => [name, shapeText(t.shape),
      t.dtype + (t.kind === "ndarray" ? " (numpy)" : ""), t.device, String(t.requires_grad), String(t.is_leaf),
      t.grad_fn || "—", lineText(t.line)]);
    panels.variables.replaceChildren(rows.length ? table(["name", "shape", "dtype", "device", "requires_grad",
      "is_leaf", "grad_fn", "line"], rows) : h("p", { class: "agm-hint" }, "No tensors."));
  }

  function fillGradients() {
    const rows = Object.values(report.gradient_details || {}).map((g) => [g.name, shapeText(g.shape),
      g.before !== null && g.before !== undefined ? `${valuesText(g.before, g.shape)} → ${valuesText(g.values, g.shape)}`
        : valuesText(g.values, g.shape), num(g.norm), g.source === "hook" ? "intermediate" : "leaf .grad"]);
    panels.gradients.replaceChildren(rows.length ? table(["name", "shape", "values (before → after)", "norm", "from"], rows)
      : h("p", { class: "agm-hint" }, "No gradients: the cell ran no backward()."));
  }

  const diagList = h("ol", { class: "agm-diags", "aria-label": "diagnostics" });
  const diagArea = h("div", { class: "agm-diag-detail" });
  panels.diagnostics.append(diagList, diagArea);
  function fillDiagnostics() {
    const list = report.diagnostics || [];
    if (!list.length) {
      diagArea.replaceChildren(h("p", { class: "agm-hint" }, "No diagnostics: nothing suspicious found."));
      return;
    }
    const chosen = model.get("diagnostic");
    const items = list.map((d, i) => h("li", {}, h("button", {
      type: "button", class: `agm-diag sev-${d.severity}`, "aria-pressed": String(i === chosen),
      onclick: () => chooseDiagnostic(i === chosen ? null : i),
    }, h("span", { class: "agm-sev" }, d.severity.toUpperCase()), ` line ${lineText(d.line)} · ${d.kind}`)));
    const d = list[chosen];
    diagArea.replaceChildren();
    if (d) {
      diagArea.append(h("div", { class: "agm-message" }, withCode(d.message)), sourceView(report, d.line));
      if (d.names.length && drawings.length) diagArea.append(h("p", { class: "agm-hint" }, `Highlighted in the graph: ${d.names.join(", ")}`));
    }
    diagList.replaceChildren(...items);
  }

  function chooseDiagnostic(index) {
    const d = (report.diagnostics || [])[index];
    if (d) { // show a graph that contains its names
      const hit = graphs.findIndex((g) => g.nodes.some((n) => nodeNames(n).some((x) => d.names.includes(x))));
      if (hit >= 0 && hit !== model.get("graph")) model.set("graph", hit);
    }
    setTrait("diagnostic", index);
  }

  const slider = h("input", { type: "range", min: 0, max: lastStep, step: 1, "aria-label": "timeline step",
    oninput: (e) => setTrait("step", Number(e.target.value)) });
  const playButton = h("button", { type: "button", onclick: () => togglePlay() }, "");
  const stepLabel = h("span", { class: "agm-steplabel", "aria-live": "polite" });
  const opArea = h("div", { class: "agm-op" });
  const controls = h("div", { class: "agm-toolbar" },
    h("button", { type: "button", "aria-label": "first step", onclick: () => goStep(0) }, "|◀"),
    h("button", { type: "button", "aria-label": "previous step", onclick: () => goStep(model.get("step") - 1) }, "◀"),
    playButton,
    h("button", { type: "button", "aria-label": "next step", onclick: () => goStep(model.get("step") + 1) }, "▶"),
    h("button", { type: "button", "aria-label": "last step", onclick: () => goStep(lastStep) }, "▶|"),
    slider, stepLabel);

  function goStep(step) {
    setTrait("step", Math.max(0, Math.min(lastStep, step)));
  }

  function togglePlay() {
    if (timer !== null) return stopPlay();
    if (model.get("step") >= lastStep) goStep(0);
    timer = setInterval(() => (model.get("step") >= lastStep ? stopPlay() : goStep(model.get("step") + 1)),
      Math.max(80, Math.min(700, 8000 / Math.max(1, lastStep))));
    fillTimelineControls();
  }

  function stopPlay() {
    clearInterval(timer);
    timer = null;
    fillTimelineControls();
  }

  function fillTimelineControls() {
    const step = model.get("step");
    slider.value = String(step);
    playButton.textContent = timer !== null ? "■ pause" : "▶ play";
    playButton.setAttribute("aria-label", timer !== null ? "pause" : "play");
    const op = ops.find((o) => o.seq === step);
    const unwatched = report.unwatched_text ? `; ${report.unwatched_text}` : "";
    const more = report.ops_total > ops.length ? ` (${report.ops_total} torch calls in all; repeats past the per-line cap are not listed${unwatched})` : "";
    stepLabel.textContent = `step ${step} / ${lastStep}${more}`;
    opArea.replaceChildren(op
      ? h("p", {}, `line ${lineText(op.line)}: `, h("code", {}, op.expr || op.code), ` — ${op.name}${op.inplace ? " (in place)" : ""}`)
      : h("p", { class: "agm-hint" }, step === 0 ? "Before the cell's first torch call. Press play or move the slider." : ""),
    sourceView(report, op ? op.line : null));
  }

  function fillTimeline() {
    if (!ops.length) {
      panels.timeline.append(h("p", { class: "agm-hint" }, "No torch calls were recorded."));
      return;
    }
    fillTimelineControls();
    panels.timeline.append(controls, opArea);
  }

  function fillTorchviz() {
    const t = report.torchviz;
    if (!t) return;
    const drawn = t.svg ? parseSvg(t.svg) : null;
    panels.torchviz.replaceChildren(drawn ? h("div", { class: "agm-scroll" }, drawn)
      : h("div", {}, h("p", { class: "agm-hint" }, t.hint || ""), t.dot ? h("pre", {}, t.dot) : null));
  }

  // -- wiring ----------------------------------------------------------------------------------------
  function showTab() {
    const tab = tabs.includes(model.get("tab")) ? model.get("tab") : "graph";
    for (const name of tabs) {
      const on = name === tab;
      tabButtons[name].setAttribute("aria-selected", String(on));
      tabButtons[name].setAttribute("tabindex", on ? "0" : "-1");
      panels[name].hidden = !on;
    }
    if (tab !== "timeline" && timer !== null) stopPlay();
    if (["graph", "diagnostics", "timeline", "replay"].includes(tab)) panels[tab].append(stage);
    if (replay && tab === "replay") showReplay();
    else if (replay) showDetails();
    stage.hidden = !drawings.length;
    if (!drawings.length) panels.graph.replaceChildren(noGraph, stage);
    if (!zoomed && svg) setZoom(fitZoom());
    paint();
    panels[tab].querySelectorAll(".agm-source").forEach(showHere);
    finder.settle();
  }

  fillVariables();
  fillGradients();
  fillDiagnostics();
  fillTimeline();
  fillTorchviz();
  const replay = tabs.includes("replay") ? replayPanel({ report, model, panel: panels.replay, details, setTrait }) : null;
  function showReplay() {
    const index = replay.graph();
    if (index !== null && index !== model.get("graph")) model.set("graph", index);
    replay.fill();
    paint();
  }
  if (report.training) panels.training.append(trainingPanel(report.training));
  drawGraph();
  showDetails();
  showTab();
  requestAnimationFrame(() => { if (!zoomed) setZoom(fitZoom()); finder.settle(); }); // the width is known once attached

  const handlers = [];
  const on = (name, fn) => { model.on(`change:${name}`, fn); handlers.push([`change:${name}`, fn]); };
  on("tab", showTab);
  on("graph", () => { if (picker) picker.value = String(model.get("graph")); drawGraph(); showDetails(); });
  on("selected", () => { if (model.get("tab") !== "replay") showDetails(); paint(); });
  on("diagnostic", () => { fillDiagnostics(); paint(); });
  on("step", () => { fillTimelineControls(); paint(); });
  on("replay_step", () => { if (model.get("tab") === "replay") showReplay(); });
  on("replay_call", () => { if (model.get("tab") === "replay") showReplay(); });
  if (picker) picker.value = String(model.get("graph"));

  return () => {
    if (timer !== null) clearInterval(timer);
    for (const [event, fn] of handlers) model.off(event, fn);
  };
}

// -- the Training panel: gradient norms (or update/weight ratios) per step, one line per parameter or layer ----
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22"];
const MAX_SERIES = 12; // more parameters than this are drawn one line per layer
const RATIO_RULE = 1e-3; // the usual rule of thumb for ||Δw|| / ||w||: drawn as a faint reference line

function svgEl(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

const svgTitle = (text) => svgEl("title", {}, text);
const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

function layersOf(training) {
  const params = training.parameters || [];
  const layerOf = (name) => (params.length > MAX_SERIES && name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : name);
  const groups = new Map();
  for (const name of params) {
    const layer = layerOf(name);
    if (!groups.has(layer)) groups.set(layer, []);
    groups.get(layer).push(name);
  }
  return [...groups];
}

function normSeries(training) {
  const steps = training.steps || [];
  return layersOf(training).map(([label, names]) => ({
    label,
    values: steps.map((s) => {
      const got = names.map((n) => s.grad_norms[n]).filter((v) => v !== undefined);
      if (!got.length) return null;
      if (got.some((v) => finite(v) === null)) return Infinity; // "inf" or nan (null) in the JSON
      return Math.sqrt(got.reduce((sum, v) => sum + v * v, 0));
    }),
  })).filter((series) => series.values.some((v) => v !== null));
}

// A layer's line is its first parameter's ratio (the weight: modules list it before the bias); the
// layer's joint ratio would need each parameter's norm, which the report does not carry.
function ratioSeries(training) {
  const steps = training.steps || [];
  return layersOf(training).map(([label, names]) => ({
    label,
    values: steps.map((s) => {
      const got = names.map((n) => (s.update_ratios || {})[n]).find((v) => v !== undefined);
      return got === undefined ? null : finite(got) === null ? Infinity : got;
    }),
  })).filter((series) => series.values.some((v) => v !== null));
}

// bridge: draw across steps without a value (ratios are sampled on long loops) instead of breaking the line
function linePlot(series, steps, { log, label, reference = null, bridge = false }) {
  const W = 640, H = 240, L = 56, R = 12, T = 10, B = 28;
  const ys = series.flatMap((s) => s.values).map(finite).filter((v) => v !== null && (!log || v > 0));
  if (!ys.length) return h("p", { class: "agm-hint" }, `No ${label} to plot.`);
  if (reference !== null) ys.push(reference); // always in view: how far the lines are from it is the point
  const f = (v) => (log ? Math.log10(v) : v);
  let lo = Math.min(...ys.map(f)), hi = Math.max(...ys.map(f));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  if (reference !== null) { const pad = (hi - lo) * 0.06; lo -= pad; hi += pad; } // the line off the frame
  const x = (i) => L + (steps.length > 1 ? (i * (W - L - R)) / (steps.length - 1) : (W - L - R) / 2);
  const y = (v) => T + ((hi - f(v)) * (H - T - B)) / (hi - lo);
  const svg = svgEl("svg", { class: "agm-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
    "aria-label": label });
  svg.append(svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "agm-plot-frame" }));
  const tick = (v) => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(1) : num(v));
  for (const [v, text] of [[lo, tick(log ? 10 ** lo : lo)], [hi, tick(log ? 10 ** hi : hi)]]) {
    svg.append(svgEl("text", { x: L - 4, y: T + ((hi - v) * (H - T - B)) / (hi - lo) + 4, "text-anchor": "end",
      class: "agm-plot-axis" }, text));
  }
  if (reference !== null) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(reference), y2: y(reference), class: "agm-plot-reference" },
      svgTitle(`${reference.toExponential(0)}: the usual rule of thumb`)));
    svg.append(svgEl("text", { x: W - R - 4, y: y(reference) - 4, "text-anchor": "end", class: "agm-plot-axis agm-plot-reference-label" },
      `${reference.toExponential(0)} rule of thumb`));
  }
  svg.append(svgEl("text", { x: L, y: H - 8, class: "agm-plot-axis" }, `step ${steps[0]}`));
  svg.append(svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "agm-plot-axis" },
    `step ${steps[steps.length - 1]}`));
  series.forEach((s, k) => {
    let d = "", pen = "M";
    const blownUp = s.values.findIndex((v) => v === Infinity);
    if (blownUp >= 0) {
      svg.append(svgEl("text", { x: x(blownUp), y: T + 12, "text-anchor": "middle", class: "agm-plot-inf",
        fill: PALETTE[k % PALETTE.length] }, "✕ inf/nan"));
    }
    s.values.forEach((v, i) => {
      const value = finite(v);
      if (value === null && bridge && v !== Infinity) return;
      if (value === null || (log && value <= 0)) { pen = "M"; return; }
      d += `${pen}${x(i).toFixed(1)},${y(value).toFixed(1)} `;
      pen = "L";
    });
    svg.append(svgEl("path", { d: d.trim() || "M0,0", class: "agm-series", "data-name": s.label, fill: "none",
      stroke: PALETTE[k % PALETTE.length], "stroke-width": 1.6 }, svgEl("title", {}, s.label)));
  });
  const guide = svgEl("line", { x1: 0, x2: 0, y1: T, y2: H - B, class: "agm-plot-guide", visibility: "hidden" });
  const readout = h("div", { class: "agm-plot-readout", "aria-live": "polite" }, "Hover the plot for values.");
  const hover = svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "transparent" });
  hover.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) * W) / box.width;
    const i = Math.max(0, Math.min(steps.length - 1, Math.round(((px - L) * (steps.length - 1)) / (W - L - R))));
    guide.setAttribute("x1", x(i)); guide.setAttribute("x2", x(i)); guide.setAttribute("visibility", "visible");
    readout.replaceChildren(`step ${steps[i]}: ` + series.map((s) => `${s.label} ${s.values[i] === null ? "—"
      : s.values[i] === Infinity ? "inf/nan" : num(s.values[i])}`).join(" · "));
  });
  svg.append(guide, hover);
  const legend = h("ul", { class: "agm-legend" }, series.map((s, k) =>
    h("li", {}, h("span", { class: "agm-sw", style: `background:${PALETTE[k % PALETTE.length]}` }), s.label)));
  return h("div", { class: "agm-plot-box" }, svg, readout, legend);
}

function trainingPanel(training) {
  const steps = (training.steps || []).map((s) => s.step);
  const grads = normSeries(training);
  const ratios = ratioSeries(training);
  const losses = [{ label: "loss", values: (training.steps || []).map((s) => (typeof s.loss === "number" ? s.loss
    : s.loss === null ? null : Infinity)) }];
  const positive = losses[0].values.every((v) => v === null || v > 0);
  const per = `one line per ${(training.parameters || []).length > MAX_SERIES ? "layer" : "parameter"}`;
  const notes = [];
  if (training.untracked) notes.push(`${training.untracked} more parameters were not followed.`);
  if (training.no_ratio) notes.push(`${training.no_ratio} parameters too big to copy (over 256 KiB, or 4 MiB in all) have no update/weight ratio.`);
  if (training.unread) notes.push(`${training.unread} steps ran under a profiler and were not read.`);
  if (training.unwatched_from) notes.push(`Steps from ${training.unwatched_from} on ran unwatched: their loss and gradient norms were read at each optimizer step.`);
  const views = {
    grads: {
      button: "gradient norm",
      title: `Gradient norm after each backward (${steps.length} steps, log scale, ${per})`,
      explain: null,
      plot: () => linePlot(grads, steps, { log: true, label: "gradient norms" }),
    },
    ratios: {
      button: "update / weight",
      title: `Update / weight ratio ‖Δw‖ / ‖w‖ of the step after each backward (log scale, ${per}${per.endsWith("layer") ? ": its weight" : ""})`,
      explain: `The dashed line is ${RATIO_RULE.toExponential(0)}, the usual rule of thumb: far below it the weights barely move `
        + "(learning rate too low?), far above it (1e-1 and up) each step rewrites them (too high?). "
        + "The last step has none (no later backward saw its update); after its first steps, a loop has one every few steps.",
      plot: () => linePlot(ratios, steps, { log: true, label: "update/weight ratios", reference: RATIO_RULE, bridge: true }),
    },
  };
  const title = h("h4", {});
  const explain = h("p", { class: "agm-hint" });
  const box = h("div", { class: "agm-plot-slot" });
  const buttons = {};
  const show = (which) => {
    const view = views[which];
    title.replaceChildren(view.title);
    explain.replaceChildren(view.explain || "");
    explain.hidden = !view.explain;
    box.replaceChildren(view.plot());
    for (const [name, button] of Object.entries(buttons)) button.setAttribute("aria-pressed", String(name === which));
  };
  for (const [name, view] of Object.entries(views)) {
    buttons[name] = h("button", { type: "button", class: "agm-toggle", "data-view": name, onclick: () => show(name) },
      view.button);
  }
  const toggle = ratios.length
    ? h("div", { class: "agm-toggles", role: "group", "aria-label": "what to plot per step" }, buttons.grads, buttons.ratios)
    : null;
  show("grads");
  return h("div", { class: "agm-training" },
    toggle, title, box, explain,
    h("h4", {}, `Loss${positive ? " (log scale)" : ""}`),
    linePlot(losses, steps, { log: positive, label: "loss" }),
    notes.map((n) => h("p", { class: "agm-hint" }, n)));
}

export default { render };
