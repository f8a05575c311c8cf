// vtcc report explorer: the map of the embeddings on a canvas, a thumbnail on hover, a cluster's
// gallery on click (least confident first). Data: the JSON in #explorer-data. No network, no library.
// window.vtccExplorer is what curation.js (the curation of the clusters) builds on.
(() => {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const api = (window.vtccExplorer = { data, marks: null, suppressClick: false, decorate: null });
  const canvas = document.getElementById("map");
  const context = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const gallery = document.getElementById("gallery");
  const count = data.x.length;
  const pad = 12;
  const span = (values) => {
    let low = Infinity, high = -Infinity;
    for (const v of values) { if (v < low) low = v; if (v > high) high = v; }
    return [low, high - low || 1];
  };
  const [x0, dx] = span(data.x), [y0, dy] = span(data.y);
  const px = new Float32Array(count), py = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    px[i] = pad + ((data.x[i] - x0) / dx) * (canvas.width - 2 * pad);
    py[i] = canvas.height - pad - ((data.y[i] - y0) / dy) * (canvas.height - 2 * pad);
  }
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#c7c7c7", "#dbdb8d", "#9edae5"];
  const colour = (k) => (k < 0 ? "#000" : k < PALETTE.length ? PALETTE[k] : `hsl(${(k * 137.5) % 360},65%,45%)`);
  let colourBy = "cluster", open = -1;
  const GALLERY = 2000; // images a gallery shows at first (a button shows more)

  const rgbCache = new Map();
  function rgb(k) { // a colour as [r, g, b], through a 1-pixel canvas once per colour
    if (!rgbCache.has(k)) {
      const probe = document.createElement("canvas").getContext("2d");
      probe.fillStyle = colour(k);
      probe.fillRect(0, 0, 1, 1);
      rgbCache.set(k, Array.from(probe.getImageData(0, 0, 1, 1).data.slice(0, 3)));
    }
    return rgbCache.get(k);
  }
  function stamp(pixels, x, y, side, [r, g, b], alpha) { // a square of side px, blended over white
    const w = canvas.width, h = canvas.height, half = side >> 1;
    for (let yy = Math.max(0, (y | 0) - half); yy < Math.min(h, (y | 0) - half + side); yy++) {
      for (let xx = Math.max(0, (x | 0) - half); xx < Math.min(w, (x | 0) - half + side); xx++) {
        const at = 4 * (yy * w + xx);
        pixels[at] += (r - pixels[at]) * alpha;
        pixels[at + 1] += (g - pixels[at + 1]) * alpha;
        pixels[at + 2] += (b - pixels[at + 2]) * alpha;
      }
    }
  }
  // Every point in one pass over an ImageData (100,000 points in a few ms): faded points first,
  // the open cluster's on top; api.marks: 1 selected (black ring), 2 set aside (grey).
  function draw() {
    const started = performance.now();
    const image = context.createImageData(canvas.width, canvas.height);
    image.data.fill(255);
    const key = colourBy === "label" && data.label ? data.label : data.cluster;
    const marks = api.marks, grey = [160, 160, 160], black = [0, 0, 0];
    for (const strong of [false, true]) {
      for (let i = 0; i < count; i++) {
        if ((open < 0 || data.cluster[i] === open) !== strong) continue;
        const mark = marks ? marks[i] : 0;
        if (mark & 1) stamp(image.data, px[i], py[i], 7, black, 1);
        stamp(image.data, px[i], py[i], 4, mark & 2 ? grey : rgb(key[i]), strong ? 0.9 : 0.12);
      }
    }
    context.putImageData(image, 0, 0);
    if (api.decorate) api.decorate(context);
    canvas.dataset.points = String(count);
    canvas.dataset.drawMs = (performance.now() - started).toFixed(1);
  }

  const BLANK = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==";
  function setThumb(image, i) { // inline, or a cell of a sheet beside the page (loaded on demand)
    if (data.thumb) { image.src = data.thumb[i]; return; }
    const { files, side, cell } = data.sheets, per = side * side, shown = 64;
    const [row, column] = [Math.floor((i % per) / side), (i % per) % side];
    image.src = BLANK;
    image.style.background = `url(${files[Math.floor(i / per)]}) -${column * shown}px -${row * shown}px / ` +
      `${side * shown}px ${side * shown}px no-repeat`;
    image.dataset.cell = `${cell}`;
  }

  function nearest(event) {
    const box = canvas.getBoundingClientRect();
    const mx = ((event.clientX - box.left) * canvas.width) / box.width;
    const my = ((event.clientY - box.top) * canvas.height) / box.height;
    let best = -1, bestDistance = 64; // within 8 px
    for (let i = 0; i < count; i++) {
      const d = (px[i] - mx) ** 2 + (py[i] - my) ** 2;
      if (d < bestDistance) { best = i; bestDistance = d; }
    }
    return best;
  }

  const describe = (i) => `cluster ${data.cluster[i]} · confidence ${data.confidence[i].toFixed(3)}` +
    (data.label ? ` · label ${data.label[i]}` : "");

  canvas.addEventListener("mousemove", (event) => {
    const i = nearest(event);
    if (i < 0) { tip.hidden = true; delete tip.dataset.point; return; }
    setThumb(tip.querySelector("img"), i);
    tip.querySelector("span").textContent = describe(i);
    tip.style.left = `${event.clientX + 14}px`;
    tip.style.top = `${event.clientY + 14}px`;
    tip.dataset.point = String(i);
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (event) => {
    if (api.suppressClick) { api.suppressClick = false; return; } // the end of a selection drag
    const i = nearest(event);
    if (i >= 0) openCluster(data.cluster[i]);
  });

  function openCluster(k) {
    if (gallery.dataset.cluster !== String(k)) api.galleryLimit = 0; // another cluster: its first images
    open = k;
    const members = [];
    for (let i = 0; i < count; i++) if (data.cluster[i] === k) members.push(i);
    members.sort((a, b) => data.confidence[a] - data.confidence[b]);
    gallery.replaceChildren();
    const heading = document.createElement("h3");
    const of = data.total === count ? "" : ` (${members.length} of its ${data.sizes[k]} images in the sample)`;
    const name = api.nameOf ? api.nameOf(k) : "";
    heading.textContent = `Cluster ${k}${name ? ` "${name}"` : ""}: ${data.sizes[k] || 0} images${of}, ` +
      "least confident first";
    gallery.append(heading);
    if (data.label) {
      const tally = {};
      for (const i of members) tally[data.label[i]] = (tally[data.label[i]] || 0) + 1;
      const line = document.createElement("p");
      line.textContent = "labels here: " + Object.entries(tally).sort((a, b) => b[1] - a[1])
        .map(([label, n]) => `${label} (${n})`).join(", ");
      gallery.append(line);
    }
    const limit = Math.max(GALLERY, api.galleryLimit || 0);
    for (const i of members.slice(0, limit)) {
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      setThumb(image, i);
      figure.dataset.point = String(i);
      if (api.marks) figure.classList.toggle("chosen", (api.marks[i] & 1) > 0);
      if (api.marks) figure.classList.toggle("aside", (api.marks[i] & 2) > 0);
      image.alt = describe(i);
      image.title = describe(i);
      const caption = document.createElement("figcaption");
      caption.textContent = data.confidence[i].toFixed(2);
      figure.append(image, caption);
      figure.dataset.confidence = String(data.confidence[i]);
      gallery.append(figure);
    }
    if (members.length > limit) {
      const more = document.createElement("button");
      more.type = "button";
      more.textContent = `show ${Math.min(GALLERY, members.length - limit)} more of ${members.length}`;
      more.addEventListener("click", () => { api.galleryLimit = limit + GALLERY; openCluster(k); });
      gallery.append(more);
    }
    gallery.dataset.cluster = String(k);
    for (const row of document.querySelectorAll("#cluster-list tr.pick")) {
      row.classList.toggle("open", row.dataset.cluster === String(k));
    }
    draw();
  }

  const list = document.getElementById("cluster-list");
  data.sizes.forEach((size, k) => {
    if (!size) return;
    const row = document.createElement("tr");
    row.className = "pick";
    row.dataset.cluster = String(k);
    row.innerHTML = `<td><span style="color:${colour(k)}">&#9632;</span> ${k}</td><td>${size}</td>`;
    row.addEventListener("click", () => openCluster(k));
    list.append(row);
  });
  const choice = document.getElementById("colour-by");
  if (choice) choice.addEventListener("change", () => { colourBy = choice.value; draw(); });
  Object.assign(api, { count, px, py, draw, openCluster, colour, setThumb, describe });
  Object.defineProperty(api, "open", { get: () => open, set: (k) => { open = k; } });
  draw();
})();
