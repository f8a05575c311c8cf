// vtcc report explorer, curation: fix the clusters where they are shown. Select points (a box or a
// lasso dragged on the map, shift to add; a click on an image in a gallery), merge the ticked
// clusters, split (the selection into a new cluster, or the open cluster into 2 or 3 sub-clusters of
// the run's embedding), move the selection, name clusters, set images aside, undo. The decisions are
// kept in localStorage (per page) and downloaded as curation.json (docs/curation.md), which
// vtcc-predict curation=<file> applies to new images. Built on window.vtccExplorer (explorer.js).
(() => {
  const api = window.vtccExplorer;
  if (!api) return;
  const data = api.data, count = api.count, K = data.k;
  const base = Int32Array.from(data.cluster); // the run's own clusters
  const paths = data.paths ? data.paths.rest.map((rest) => data.paths.prefix + rest) : null;
  const storageKey = `vtcc-curation:${data.id}`;
  const selected = new Uint8Array(count);
  const $ = (id) => document.getElementById(id);
  const canvas = $("map");
  const fresh = () => ({ names: {}, merges: [], splits: {}, moves: {}, outliers: [] });
  let state = fresh(), history = [];
  api.marks = new Uint8Array(count);

  // ---- the decisions, and each point's cluster under them (as vtcc.curation applies a file) ----
  function finder() {
    const root = new Map();
    for (const group of state.merges) {
      const low = Math.min(...group);
      for (const k of group) root.set(k, low);
    }
    return (k) => (root.has(k) ? root.get(k) : k);
  }
  function ruleOf(i) { // the run's cluster, or its part when the person split it
    const split = state.splits[base[i]];
    return split ? split.into[data.proposals[split.k][i]] : base[i];
  }
  function nextId() {
    let high = K - 1;
    for (const k of data.cluster) high = Math.max(high, k);
    for (const split of Object.values(state.splits)) high = Math.max(high, ...split.into);
    for (const k of Object.values(state.moves)) high = Math.max(high, k);
    for (const group of state.merges) high = Math.max(high, ...group);
    return high + 1;
  }
  api.nameOf = (k) => {
    if (state.names[k]) return state.names[k];
    const find = finder();
    const merged = Object.keys(state.names).map(Number).filter((m) => m !== k && find(m) === k);
    return merged.length ? state.names[Math.min(...merged)] : "";
  };
  function recompute() {
    const find = finder();
    for (let i = 0; i < count; i++) {
      const moved = state.moves[i];
      data.cluster[i] = find(moved === undefined ? ruleOf(i) : moved);
    }
    const aside = new Set(state.outliers);
    const sizes = [];
    for (let i = 0; i < count; i++) {
      sizes[data.cluster[i]] = (sizes[data.cluster[i]] || 0) + 1;
      api.marks[i] = (selected[i] ? 1 : 0) | (aside.has(i) ? 2 : 0);
    }
    data.sizes = Array.from(sizes, (n) => n || 0);
  }

  // ---- edits: each one undoable, the whole kept in localStorage ----
  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "null");
      if (saved && saved.state) ({ state, history } = { state: saved.state, history: saved.history || [] });
    } catch (error) { /* no storage here: the page works without memory */ }
  }
  function save() {
    try {
      localStorage.setItem(storageKey, JSON.stringify({ state, history: history.slice(-100) }));
    } catch (error) { /* full or refused: the download still has every decision */ }
  }
  function edit(change, said) {
    history.push(JSON.stringify(state));
    change();
    refresh(said);
    save();
  }
  function merge(ids) {
    const wanted = new Set(ids);
    const touched = state.merges.filter((group) => group.some((k) => wanted.has(k)));
    const combined = new Set([...wanted, ...touched.flat()]);
    state.merges = [...state.merges.filter((group) => !touched.includes(group)), [...combined].sort((a, b) => a - b)];
  }
  const chosen = () => { const out = []; for (let i = 0; i < count; i++) if (selected[i]) out.push(i); return out; };
  function needsPaths(what) {
    if (paths) return false;
    status(`${what}: this run's images have no file paths, so single images cannot be curated (merges, splits and names can)`);
    return true;
  }
  function moveSelection(target) {
    const points = chosen();
    if (!points.length) return status("select images first (drag on the map, or click them in a gallery)");
    if (needsPaths("moving images")) return;
    edit(() => { for (const i of points) state.moves[i] = target; selected.fill(0); },
      `${points.length} images moved to cluster ${target}`);
  }
  function splitOpen(k) {
    const open = api.open;
    const centroids = data.centroids && data.centroids[k] && data.centroids[k][open];
    if (open < 0 || open >= K || !centroids || state.splits[open]) {
      return status("open one of the run's clusters (not split yet, with enough images) to split it");
    }
    const into = [open];
    for (let n = nextId(); into.length < k; n++) into.push(n);
    edit(() => { state.splits[open] = { k, into }; }, `cluster ${open} split into ${into.join(", ")}`);
  }

  // ---- what the page shows ----
  function status(text) { $("curation-status").textContent = text; }
  function summary() {
    const parts = [`${state.merges.length} merge group(s)`, `${Object.keys(state.splits).length} split(s)`,
      `${Object.keys(state.moves).length} moved`, `${state.outliers.length} set aside`,
      `${Object.values(state.names).filter(Boolean).length} name(s)`];
    return `curation: ${parts.join(", ")}` + (paths ? "" : " (no image paths: clusters only)");
  }
  function renderList() {
    const list = $("cluster-list");
    list.replaceChildren();
    const head = list.insertRow();
    for (const title of ["", "cluster", "name", "images"]) head.appendChild(document.createElement("th")).textContent = title;
    const target = $("move-to");
    target.replaceChildren();
    data.sizes.forEach((size, k) => {
      if (!size) return;
      const row = list.insertRow();
      row.className = "pick" + (k === api.open ? " open" : "");
      row.dataset.cluster = String(k);
      const tick = row.insertCell().appendChild(document.createElement("input"));
      Object.assign(tick, { type: "checkbox", className: "tick" });
      tick.dataset.cluster = String(k);
      const swatch = row.insertCell();
      swatch.innerHTML = `<span style="color:${api.colour(k)}">&#9632;</span> `;
      swatch.append(String(k));
      const name = row.insertCell().appendChild(document.createElement("input"));
      Object.assign(name, { className: "name", value: api.nameOf(k), maxLength: 200, placeholder: "name" });
      name.addEventListener("change", () => edit(() => {
        if (name.value.trim()) state.names[k] = name.value.trim(); else delete state.names[k];
      }, `cluster ${k} named`));
      row.insertCell().textContent = String(size);
      row.addEventListener("click", (event) => { if (event.target.tagName !== "INPUT") api.openCluster(k); });
      target.add(new Option(`${k}${api.nameOf(k) ? ` ${api.nameOf(k)}` : ""}`, String(k)));
    });
    target.add(new Option("a new cluster", "new"));
  }
  function refresh(said) {
    recompute();
    renderList();
    const open = api.open;
    if (open >= 0 && data.sizes[open]) api.openCluster(open);
    else { api.open = -1; $("gallery").replaceChildren(); delete $("gallery").dataset.cluster; api.draw(); }
    $("selection-count").textContent = `${chosen().length} selected`;
    status(said ? `${said} · ${summary()}` : summary());
    document.body.dataset.curation = JSON.stringify({ clusters: data.sizes.filter(Boolean).length, edits: history.length });
  }
  function setSelection(points, add) {
    if (!add) selected.fill(0);
    for (const i of points) selected[i] = 1;
    for (let i = 0; i < count; i++) api.marks[i] = (api.marks[i] & 2) | selected[i];
    $("selection-count").textContent = `${chosen().length} selected`;
    for (const figure of document.querySelectorAll("#gallery figure")) {
      figure.classList.toggle("chosen", selected[Number(figure.dataset.point)] === 1);
    }
    api.draw();
  }

  // ---- selecting: a box or a lasso on the map, a click in a gallery ----
  let stroke = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * canvas.width) / box.width, ((event.clientY - box.top) * canvas.height) / box.height];
  };
  const lasso = () => document.querySelector("input[name=select-mode]:checked").value === "lasso";
  function inside(x, y, points) { // ray casting
    let odd = false;
    for (let a = 0, b = points.length - 1; a < points.length; b = a++) {
      const [xa, ya] = points[a], [xb, yb] = points[b];
      if ((ya > y) !== (yb > y) && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) odd = !odd;
    }
    return odd;
  }
  canvas.addEventListener("mousedown", (event) => {
    if (event.button === 0) stroke = { points: [at(event)], moved: false, add: event.shiftKey };
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!stroke || !(event.buttons & 1)) return;
    const point = at(event), [x0, y0] = stroke.points[0];
    stroke.points.push(point);
    stroke.moved ||= Math.hypot(point[0] - x0, point[1] - y0) > 4;
    if (stroke.moved) {
      api.decorate = (context) => {
        context.strokeStyle = "#000";
        context.setLineDash([4, 3]);
        context.beginPath();
        const [xa, ya] = stroke.points[0], [xb, yb] = stroke.points[stroke.points.length - 1];
        if (lasso()) stroke.points.forEach(([x, y], n) => (n ? context.lineTo(x, y) : context.moveTo(x, y)));
        else context.rect(xa, ya, xb - xa, yb - ya);
        context.closePath();
        context.stroke();
        context.setLineDash([]);
      };
      api.draw();
    }
  });
  addEventListener("mouseup", () => {
    if (!stroke) return;
    const done = stroke;
    stroke = null;
    api.decorate = null;
    if (!done.moved) return;
    api.suppressClick = true;
    setTimeout(() => { api.suppressClick = false; }, 0); // no click follows a drag that left the map
    const [xa, ya] = done.points[0], [xb, yb] = done.points[done.points.length - 1];
    const [left, right, top, bottom] = [Math.min(xa, xb), Math.max(xa, xb), Math.min(ya, yb), Math.max(ya, yb)];
    const points = [];
    for (let i = 0; i < count; i++) {
      const [x, y] = [api.px[i], api.py[i]];
      if (lasso() ? inside(x, y, done.points) : x >= left && x <= right && y >= top && y <= bottom) points.push(i);
    }
    setSelection(points, done.add);
  });
  $("gallery").addEventListener("click", (event) => {
    const figure = event.target.closest("figure");
    if (!figure) return;
    const i = Number(figure.dataset.point);
    selected[i] ^= 1;
    setSelection([], true);
  });

  // ---- the buttons ----
  const ticked = () => [...document.querySelectorAll("#cluster-list input.tick:checked")].map((t) => Number(t.dataset.cluster));
  $("clear-selection").addEventListener("click", () => setSelection([], false));
  $("merge").addEventListener("click", () => {
    const ids = ticked();
    if (ids.length < 2) return status("tick two clusters or more to merge them");
    edit(() => merge(ids), `clusters ${ids.join(", ")} merged into ${Math.min(...ids)}`);
  });
  $("move").addEventListener("click", () => {
    const value = $("move-to").value;
    moveSelection(value === "new" ? nextId() : Number(value));
  });
  $("split-selection").addEventListener("click", () => moveSelection(nextId()));
  $("split-open").addEventListener("click", () => splitOpen(Number($("split-count").value)));
  $("set-aside").addEventListener("click", () => {
    const points = chosen();
    if (!points.length) return status("select images first (drag on the map, or click them in a gallery)");
    if (needsPaths("setting images aside")) return;
    edit(() => { state.outliers = [...new Set([...state.outliers, ...points])]; selected.fill(0); }, `${points.length} images set aside`);
  });
  $("bring-back").addEventListener("click", () => {
    const points = new Set(chosen());
    edit(() => { state.outliers = state.outliers.filter((i) => !points.has(i)); }, `${points.size} images brought back`);
  });
  $("undo").addEventListener("click", () => {
    if (!history.length) return status("nothing to undo");
    state = JSON.parse(history.pop());
    refresh("undone");
    save();
  });
  $("start-over").addEventListener("click", () => edit(() => { state = fresh(); }, "every decision dropped (undo brings them back)"));
  for (const button of document.querySelectorAll("[data-merge]")) {
    button.addEventListener("click", () => edit(() => merge(button.dataset.merge.split(",").map(Number)),
      `clusters ${button.dataset.merge} merged`));
  }
  for (const button of document.querySelectorAll("[data-split]")) {
    button.addEventListener("click", () => { api.openCluster(Number(button.dataset.split)); splitOpen(2); });
  }

  // ---- the file: docs/curation.md ----
  function exportRecord() {
    const find = finder();
    const moves = [], outliers = [];
    if (paths) {
      for (const [i, target] of Object.entries(state.moves)) {
        if (find(target) !== find(ruleOf(Number(i)))) moves.push({ path: paths[i], cluster: target });
      }
      for (const i of state.outliers) outliers.push(paths[i]);
    }
    const splits = Object.entries(state.splits).map(([c, split]) => ({
      cluster: Number(c), into: split.into, centroids: data.centroids[split.k][c] }));
    const known = new Set([...Array(K).keys(), ...splits.flatMap((s) => s.into), ...moves.map((m) => m.cluster)]);
    const merges = state.merges.map((group) => group.filter((k) => known.has(k))).filter((group) => group.length > 1);
    const names = Object.entries(state.names).filter(([k, name]) => name && known.has(Number(k)))
      .map(([k, name]) => ({ cluster: Number(k), name })).sort((a, b) => a.cluster - b.cluster);
    return { format: "vtcc-curation", version: 1, num_clusters: K, names, merges, splits, moves, outliers };
  }
  $("download").addEventListener("click", () => {
    const link = $("curation-file");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([JSON.stringify(exportRecord(), null, 1)], { type: "application/json" }));
    link.click();
    status(`curation.json downloaded · ${summary()}`);
  });

  api.curation = { exportRecord, state: () => state, select: setSelection };
  load();
  refresh(history.length ? "the decisions kept in this browser" : "");
})();
