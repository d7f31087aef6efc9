// The region view: the toy network's exact partition (data/regions.js, loaded when the view is first opened);
// a click finds the point's region and shows W, b and the contributions w_i x_i of the chosen logit.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const R = {data: null, layer: 1, output: 0, point: null, clicks: 0};
  window.PWA_REGIONS = R;
  const $ = (id) => document.getElementById(id);

  R.open = async function () {
    if (R.data) return;
    window.pwaStatus("loading the regions…");
    try {
      await window.pwaLoadScript(window.PWA_META.regions);
      window.pwaStatus("");
    } catch (err) {
      window.pwaStatus(`${err.message}: rebuild the explorer with pwawidgets.static_explorer.build(out_dir)`, true);
    }
  };

  R.receive = function (payload) {
    R.data = payload;
    R.layer = payload.layers.length;
    const slider = $("region-layer");
    slider.max = payload.layers.length;
    slider.value = R.layer;
    slider.addEventListener("input", () => { R.layer = Number(slider.value); draw(); });
    const group = $("region-output");
    for (let k = 0; k < payload.outputs; k++) {
      const label = document.createElement("label");
      label.innerHTML = `<input type="radio" name="region-output" value="${k}"${k === 0 ? " checked" : ""}> ${k}`;
      label.querySelector("input").addEventListener("change", () => { R.output = k; info(); });
      group.appendChild(label);
    }
    const [[x0, x1], [y0, y1]] = payload.bounds;
    const svg = $("region-svg");
    svg.setAttribute("viewBox", `${x0} ${-y1} ${x1 - x0} ${y1 - y0}`);
    svg.setAttribute("width", "520");
    svg.setAttribute("height", String(Math.round(520 * (y1 - y0) / (x1 - x0))));
    svg.addEventListener("click", (event) => {
      const p = svg.createSVGPoint();
      p.x = event.clientX;
      p.y = event.clientY;
      const q = p.matrixTransform(svg.getScreenCTM().inverse());
      R.pick(q.x, -q.y);
    });
    const finals = payload.layers[payload.layers.length - 1].polygons;
    const largest = finals.reduce((best, poly, i) => (area(poly) > area(finals[best]) ? i : best), 0);
    R.point = centroid(finals[largest]);  // start inside the largest region
    draw();
  };

  // A point of the plane: highlight its region, show its affine map.
  R.pick = function (x, y) {
    R.point = [x, y];
    R.clicks += 1;
    draw();
  };

  function area(poly) {
    let a = 0;
    for (let i = 0; i < poly.length; i++) {
      const [xa, ya] = poly[i], [xb, yb] = poly[(i + 1) % poly.length];
      a += xa * yb - xb * ya;
    }
    return a / 2;
  }

  function centroid(poly) {
    let a = 0, cx = 0, cy = 0;
    for (let i = 0; i < poly.length; i++) {
      const [xa, ya] = poly[i], [xb, yb] = poly[(i + 1) % poly.length];
      const cross = xa * yb - xb * ya;
      a += cross; cx += (xa + xb) * cross; cy += (ya + yb) * cross;
    }
    return [cx / (3 * a), cy / (3 * a)];
  }

  // Index of the convex (counter-clockwise) polygon holding p, or -1.
  function locate(polygons, p) {
    for (let r = 0; r < polygons.length; r++) {
      const poly = polygons[r];
      let inside = true;
      for (let i = 0; i < poly.length && inside; i++) {
        const [xa, ya] = poly[i], [xb, yb] = poly[(i + 1) % poly.length];
        inside = (xb - xa) * (p[1] - ya) - (yb - ya) * (p[0] - xa) >= -1e-9;
      }
      if (inside) return r;
    }
    return -1;
  }

  function element(name, attributes, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, v);
    parent.appendChild(el);
    return el;
  }

  const path = (poly) => poly.map(([x, y]) => `${x},${-y}`).join(" ");

  function draw() {
    const d = R.data;
    if (!d) return;
    const svg = $("region-svg");
    svg.replaceChildren();
    const layer = d.layers[R.layer - 1];
    layer.polygons.forEach((poly, i) => {
      element("polygon", {points: path(poly), fill: layer.colours[i], stroke: "#ffffff",
        "stroke-width": "0.6", "vector-effect": "non-scaling-stroke"}, svg);
    });
    for (const line of d.boundary) {
      element("polyline", {points: path(line), fill: "none", stroke: "#111111", "stroke-width": "2",
        "vector-effect": "non-scaling-stroke"}, svg);
    }
    const dots = ["#f0f0f0", "#222222", "#e6b800", "#00a0a0"];
    for (const [x, y, label] of d.points) {
      element("circle", {cx: x, cy: -y, r: 0.025, fill: dots[label % dots.length], stroke: "#555555",
        "stroke-width": "0.5", "vector-effect": "non-scaling-stroke"}, svg);
    }
    const cell = locate(layer.polygons, R.point);
    if (cell >= 0) {
      element("polygon", {points: path(layer.polygons[cell]), fill: "none", stroke: "#ffdd00",
        "stroke-width": "3", "vector-effect": "non-scaling-stroke", id: "region-highlight"}, svg);
    }
    element("circle", {cx: R.point[0], cy: -R.point[1], r: 0.06, fill: "#ff2222", stroke: "#ffffff",
      "stroke-width": "1.5", "vector-effect": "non-scaling-stroke"}, svg);
    $("region-layer-label").textContent = `${R.layer} of ${d.layers.length}: ${layer.polygons.length} regions`;
    $("region-caption").textContent = `${d.dataset}, hidden layers ${d.hidden.join("×")}, seed ${d.seed}, ` +
      `training accuracy ${(100 * d.accuracy).toFixed(1)} %; the black line is the decision boundary.`;
    svg.dataset.key = `${R.layer}/${R.point[0]}/${R.point[1]}`;
    info(cell);
  }

  function cellText(v, id) {
    const text = (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(4);
    return `<td class="num"${id ? ` id="${id}"` : ""} data-value="${String(v)}">${text}</td>`;
  }

  function info(cell) {
    const d = R.data;
    const p = R.point;
    const finals = d.layers[d.layers.length - 1];
    const r = locate(finals.polygons, p);
    const box = $("region-info");
    box.dataset.x = String(p[0]);
    box.dataset.y = String(p[1]);
    if (r < 0) {
      box.innerHTML = `<p>x = (${p[0].toFixed(3)}, ${p[1].toFixed(3)}) lies outside the box that was ` +
        "partitioned: click inside it.</p>";
      return;
    }
    const W = d.W[r], b = d.b[r], k = R.output;
    const rows = W.map((w, c) => `<tr><th>logit ${c}</th>${cellText(w[0])}${cellText(w[1])}${cellText(b[c])}` +
      `${cellText(w[0] * p[0] + w[1] * p[1] + b[c])}</tr>`).join("");
    const c1 = W[k][0] * p[0], c2 = W[k][1] * p[1], total = c1 + c2 + b[k];
    const layerCell = cell === undefined || cell < 0 ? "" :
      ` (in region ${cell} of the partition after layer ${R.layer})`;
    box.innerHTML =
      `<p><b>x</b> = (${p[0].toFixed(3)}, ${p[1].toFixed(3)}): final region <b id="region-index">${r}</b>` +
      `${layerCell}, activation pattern <code>${finals.patterns[r]}</code></p>` +
      `<table><tr><th></th><th>w₁</th><th>w₂</th><th>b</th><th>W x + b</th></tr>${rows}</table>` +
      `<p>logit ${k} at x, exactly:</p><table>` +
      `<tr><th>w₁ x₁</th>${cellText(c1, "region-c1")}</tr><tr><th>w₂ x₂</th>${cellText(c2, "region-c2")}</tr>` +
      `<tr><th>bias b</th>${cellText(b[k], "region-bias")}</tr>` +
      `<tr><th>logit = w₁x₁ + w₂x₂ + b</th>${cellText(total, "region-logit")}</tr></table>` +
      `<p class="small">W and b hold on the whole region: every point of it has the same activation pattern.</p>`;
  }
})();
