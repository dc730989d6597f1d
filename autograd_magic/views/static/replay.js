// The Backward replay panel (issue 12), appended to widget.js by views/widget.py.
// Steps through report.backward_steps: prev/next buttons, a slider, arrow keys. The widget
// highlights the current step's node (and the edges its gradients went along) in the drawing;
// the side panel says what the node did. User strings reach the DOM only as text nodes.

function replayPanel({ report, model, panel, details, setTrait }) {
  const replays = report.backward_steps || [];
  const call = () => replays[model.get("replay_call")] || replays[0];
  const count = () => (call() ? call().steps.length : 0);
  const picker = replays.length > 1 ? h("select", { "aria-label": "backward call",
    onchange: (e) => { setTrait("replay_call", Number(e.target.value)); go(1); } },
    replays.map((r, i) => h("option", { value: i }, r.title))) : null;
  const slider = h("input", { type: "range", min: 1, max: Math.max(1, count()), step: 1, "aria-label": "replay step",
    oninput: (e) => go(Number(e.target.value)) });
  const label = h("span", { class: "agm-steplabel", "aria-live": "polite" });
  const notes = h("div", { class: "agm-hint" });
  const controls = h("div", { class: "agm-toolbar" }, picker,
    h("button", { type: "button", "aria-label": "first backward step", onclick: () => go(1) }, "|◀"),
    h("button", { type: "button", "aria-label": "previous backward step", onclick: () => go(step() - 1) }, "◀ prev"),
    h("button", { type: "button", "aria-label": "next backward step", onclick: () => go(step() + 1) }, "next ▶"),
    h("button", { type: "button", "aria-label": "last backward step", onclick: () => go(count()) }, "▶|"),
    slider, label);
  panel.append(h("p", { class: "agm-hint" }, "What autograd's engine ran, in order: the highlighted node got the "
    + "gradient shown at the side and sent one along each input edge (← → step)."), controls, notes);
  panel.addEventListener("keydown", (e) => {
    if (e.target === slider || (picker && e.target === picker)) return; // they handle arrows themselves
    const to = { ArrowRight: step() + 1, ArrowLeft: step() - 1, Home: 1, End: count() }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    go(to);
  });
  const step = () => Math.max(1, Math.min(count(), model.get("replay_step") || 1));

  function go(n) {
    setTrait("replay_step", Math.max(1, Math.min(count(), n)));
  }

  function current() {
    const r = call();
    return r ? r.steps[step() - 1] : null;
  }

  function fill() {
    const r = call();
    if (picker) picker.value = String(model.get("replay_call"));
    slider.max = String(Math.max(1, count()));
    slider.value = String(step());
    label.textContent = r ? `step ${step()} / ${count()}${r.dropped ? ` (+${r.dropped} not recorded)` : ""}` : "";
    notes.replaceChildren(...(r ? r.notes.map((n) => h("div", {}, n)) : []));
    const s = current();
    details.replaceChildren(h("h5", {}, s ? `Step ${s.number}: ${s.label}` : "Backward replay"));
    if (!s) return;
    details.append(h("div", { class: "agm-replay-what" }, s.lines[0].replace(/^\s*\d+\.\s*/, "")),
      ...s.lines.slice(1).map((text) => h("div", { class: "agm-replay-line" }, text.trim())));
    if (s.node === null) details.append(h("p", { class: "agm-hint" }, "This node is not drawn (graph size cap)."));
  }

  // the drawn node of the current step, and the edges (input -> it) its gradients went along
  function highlight() {
    const s = current();
    if (!s) return { node: null, edges: new Set() };
    const edges = new Set(s.sent.filter((f) => f.node !== null && s.node !== null).map((f) => `e${f.node}_${s.node}`));
    return { node: s.node, edges };
  }

  return { fill, highlight, graph: () => (call() ? call().graph : null) };
}
