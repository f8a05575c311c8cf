// vtcc report explorer: the map of the embeddings on a canvas, a thumbnail on hover, a cluster's
// gallery on click (least confident first). Data: the JSON in #explorer-data. No network, no library.
(() => {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
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

  function draw() {
    context.clearRect(0, 0, canvas.width, canvas.height);
    const key = colourBy === "label" && data.label ? data.label : data.cluster;
    for (let i = 0; i < count; i++) {
      context.globalAlpha = open < 0 || data.cluster[i] === open ? 0.9 : 0.12;
      context.fillStyle = colour(key[i]);
      context.fillRect(px[i] - 2, py[i] - 2, 4, 4);
    }
    context.globalAlpha = 1;
    canvas.dataset.points = String(count);
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
    tip.querySelector("img").src = data.thumb[i];
    tip.querySelector("span").textContent = describe(i);
    tip.style.left = `${event.clientX + 14}px`;
    tip.style.top = `${event.clientY + 14}px`;
    tip.dataset.point = String(i);
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (event) => {
    const i = nearest(event);
    if (i >= 0) openCluster(data.cluster[i]);
  });

  function openCluster(k) {
    open = k;
    const members = [];
    for (let i = 0; i < count; i++) if (data.cluster[i] === k) members.push(i);
    members.sort((a, b) => data.confidence[a] - data.confidence[b]);
    gallery.replaceChildren();
    const heading = document.createElement("h3");
    const of = data.total === count ? "" : ` (${members.length} of its ${data.sizes[k]} images in the sample)`;
    heading.textContent = `Cluster ${k}: ${data.sizes[k]} images${of}, least confident first`;
    gallery.append(heading);
    if (data.label) {
      const tally = {};
      for (const i of members) tally[data.label[i]] = (tally[data.label[i]] || 0) + 1;
      const line = document.createElement("p");
      line.textContent = "labels here: " + Object.entries(tally).sort((a, b) => b[1] - a[1])
        .map(([label, n]) => `${label} (${n})`).join(", ");
      gallery.append(line);
    }
    for (const i of members) {
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      image.src = data.thumb[i];
      image.alt = describe(i);
      image.title = describe(i);
      const caption = document.createElement("figcaption");
      caption.textContent = data.confidence[i].toFixed(2);
      figure.append(image, caption);
      figure.dataset.confidence = String(data.confidence[i]);
      gallery.append(figure);
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
  draw();
})();
