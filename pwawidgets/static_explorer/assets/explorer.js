// The photo view of the static explorer: reads data/meta.js (PWA_META), loads one photo's data file at a time
// with a <script> tag (fetch() is refused under file://), and draws the chosen map from its int8 values.
"use strict";

const META = window.PWA_META;
const PWA = {
  photos: {},          // name -> {payload, q (Int8Array of every map), image (HTMLImageElement), pixels}
  state: {photo: null, layer: META.layers.length - 1, cls: 0, method: "ours", opacity: 0.85, scale: 100},
  wanted: null,        // the photo asked for last (a slow load does not overwrite a later choice)
  renders: 0,
};
window.PWA = PWA;
const $ = (id) => document.getElementById(id);
const COLOURS = Array.from({length: META.colours.length / 6},
  (_, i) => [0, 2, 4].map((k) => parseInt(META.colours.substr(6 * i + k, 2), 16)));
const SIZES = META.layers.map((l) => l.height * l.width);
const PER_CLASS = SIZES.reduce((a, b) => a + b, 0);
const METHODS = Object.keys(META.methods);

// ------------------------------------------------------------------------------------------ loading

const loaded = {};
function loadScript(src) {
  if (!loaded[src]) {
    loaded[src] = new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = () => { delete loaded[src]; reject(new Error(`could not load ${src}`)); };
      document.head.appendChild(tag);
    });
  }
  return loaded[src];
}

// Data files call this: pwaReceive("photo" | "regions", payload).
function pwaReceive(kind, payload) {
  if (kind === "regions") { window.PWA_REGIONS.receive(payload); return; }
  const raw = atob(payload.maps);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  PWA.photos[payload.name] = {payload, q: new Int8Array(bytes.buffer), image: null, pixels: null};
}
window.pwaReceive = pwaReceive;

function status(text, error) {
  const el = $("status");
  el.textContent = text || "";
  el.classList.toggle("error", Boolean(error));
}

async function showPhoto(name) {
  PWA.wanted = name;
  const info = META.photos.find((p) => p.name === name);
  if (!PWA.photos[name]) {
    status(`loading ${name}…`);
    try {
      await loadScript(info.file);
    } catch (err) {
      status(`${err.message}: rebuild the explorer with pwawidgets.static_explorer.build(out_dir)`, true);
      if (PWA.state.photo) $("photo").value = PWA.state.photo;  // the picker shows the photo still shown
      return;
    }
  }
  const photo = PWA.photos[name];
  if (!photo.image) {
    const image = new Image();
    image.src = photo.payload.picture;
    await image.decode();
    const canvas = document.createElement("canvas");
    canvas.width = photo.payload.width;
    canvas.height = photo.payload.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    photo.image = image;
    photo.pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  }
  if (PWA.wanted !== name) return;  // another photo was picked meanwhile
  status("");
  PWA.state.photo = name;
  PWA.state.cls = Math.min(PWA.state.cls, photo.payload.classes.length - 1);
  $("photo").value = name;
  document.querySelectorAll("#thumbnails button").forEach((b) => {
    b.setAttribute("aria-pressed", String(b.dataset.photo === name));
  });
  $("picture").src = photo.payload.picture;
  const note = `${photo.payload.description}. EfficientNet-Lite0 reads: ${photo.payload.classes[0].name}` +
    ` (p = ${percent(photo.payload.classes[0].probability)})` +
    (info.sensible ? "." : ", a misreading: a good case to ask what the network looks at.") +
    (photo.payload.exact ? "" : " The build's audit found an operation that is not piece-wise affine: " +
      "S = Σ w·h + b may not hold here.");
  $("photo-note").textContent = note;
  render();
}

// ------------------------------------------------------------------------------------------ maps

// The stored map of (method, class, layer): float values q·s on the layer's grid.
function storedMap(photo, method, cls, layer) {
  const start = (METHODS.indexOf(method) * photo.payload.classes.length + cls) * PER_CLASS +
    SIZES.slice(0, layer).reduce((a, b) => a + b, 0);
  const scale = photo.payload.classes[cls].scales[method][layer];
  const q = photo.q.subarray(start, start + SIZES[layer]);
  return {values: Float64Array.from(q, (v) => v * scale), scale, q};
}

// Bilinear resize of an h x w grid to H x W (half-pixel centres, as torch's align_corners=False).
function upsample(values, h, w, H, W) {
  if (h === H && w === W) return values;
  const out = new Float64Array(H * W);
  const sy = h / H, sx = w / W;
  for (let Y = 0; Y < H; Y++) {
    const y = Math.max((Y + 0.5) * sy - 0.5, 0);
    const y0 = Math.min(Math.floor(y), h - 1), y1 = Math.min(y0 + 1, h - 1), fy = y - y0;
    for (let X = 0; X < W; X++) {
      const x = Math.max((X + 0.5) * sx - 0.5, 0);
      const x0 = Math.min(Math.floor(x), w - 1), x1 = Math.min(x0 + 1, w - 1), fx = x - x0;
      const top = values[y0 * w + x0] * (1 - fx) + values[y0 * w + x1] * fx;
      const bottom = values[y1 * w + x0] * (1 - fx) + values[y1 * w + x1] * fx;
      out[Y * W + X] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}

// The diverging colour of v on [-vmax, vmax], white at 0 (the page's 256-entry table).
function colour(v, vmax) {
  const t = vmax > 0 ? Math.max(-1, Math.min(1, v / vmax)) : 0;
  return COLOURS[Math.round((t + 1) / 2 * (COLOURS.length - 1))];
}

// The colour scale: the given percentile of |value| on the layer's grid (100: the largest |value|).
function colourScale(values, percentile) {
  const magnitudes = Float64Array.from(values, Math.abs).sort();
  if (!magnitudes.length) return 0;
  const top = magnitudes[magnitudes.length - 1];
  if (percentile >= 100 || top === 0) return top;
  const cut = magnitudes[Math.min(magnitudes.length - 1, Math.floor(magnitudes.length * percentile / 100))];
  return cut > 0 ? cut : top;
}

function drawMap(photo, map, layer) {
  const {width: W, height: H} = photo.payload;
  const up = upsample(map.values, layer.height, layer.width, H, W);
  const vmax = colourScale(map.values, PWA.state.scale);
  const canvas = $("map");
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(W, H);
  const a = PWA.state.opacity;
  for (let i = 0; i < W * H; i++) {
    const c = colour(up[i], vmax);
    for (let k = 0; k < 3; k++) image.data[4 * i + k] = Math.round(photo.pixels[4 * i + k] * (1 - a) + c[k] * a);
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return vmax;
}

// ------------------------------------------------------------------------------------------ text

function percent(p) { return p >= 0.001 ? `${(100 * p).toFixed(1)} %` : p.toExponential(1); }
function signed(x, digits = 7) { return (x >= 0 ? "+" : "−") + Math.abs(x).toPrecision(digits); }
function setNumber(id, x, text) {
  const el = $(id);
  el.dataset.value = String(x);
  el.textContent = text === undefined ? signed(x) : text;
}

function units(method, layer) {
  const grid = layer.name === "input"
    ? "per input pixel (summed over its 3 colour channels)"
    : `per position of ${layer.name}'s ${layer.height} × ${layer.width} grid (summed over its ${layer.channels} ` +
      `channels; a position covers about ${layer.stride} × ${layer.stride} pixels)`;
  if (method === "ours") return `contribution w·h to the logit, ${grid}`;
  return `Grad-CAM (each channel's mean gradient × activation), in logit units, ${grid}; ` +
    "it does not sum to S − b";
}

function render() {
  const s = PWA.state;
  const photo = PWA.photos[s.photo];
  if (!photo) return;
  const layer = META.layers[s.layer];
  const cls = photo.payload.classes[s.cls];
  const map = storedMap(photo, s.method, s.cls, s.layer);
  const vmax = drawMap(photo, map, layer);
  const methodName = META.methods[s.method];

  $("layer").value = s.layer;
  $("layer-label").textContent = `${layer.name} (${layer.height} × ${layer.width})`;
  $("class").max = photo.payload.classes.length - 1;
  $("class").value = s.cls;
  $("class-label").textContent = `${s.cls + 1}: ${cls.name}, p = ${percent(cls.probability)}`;
  document.querySelectorAll("#method input").forEach((r) => { r.checked = r.value === s.method; });
  $("opacity-label").textContent = s.opacity.toFixed(2);
  $("map-caption").textContent = `${methodName} for “${cls.name}” at ${layer.name}` +
    (layer.name === "input" ? "" : ` (module ${layer.module})`);
  const beyond = s.scale < 100 ? "≥ " : "";
  $("vmin").textContent = (beyond ? "≤ " : "") + (-vmax).toPrecision(3);
  $("vmax").textContent = beyond + "+" + vmax.toPrecision(3);
  $("units").textContent = units(s.method, layer);

  const sum = cls.sums[s.method][s.layer], bias = cls.bias[s.layer], score = cls.score;
  const stored = map.values.reduce((a, b) => a + b, 0);
  const bound = SIZES[s.layer] * map.scale / 2;
  $("class-name").textContent = `${cls.name} (#${cls.index}), p = ${percent(cls.probability)}`;
  setNumber("score", score);
  $("sum-label").textContent = `Σ ${s.method === "ours" ? "contributions" : "Grad-CAM map"} at ${layer.name}`;
  setNumber("sum", sum);
  $("bias-label").textContent = `bias b at ${layer.name}`;
  setNumber("bias", bias);
  $("total-label").textContent = `Σ ${s.method === "ours" ? "contributions" : "Grad-CAM"} + b`;
  setNumber("total", sum + bias);
  setNumber("gap", score - (sum + bias), signed(score - (sum + bias), 3));
  setNumber("stored", stored + bias);
  setNumber("bound", bound, bound.toPrecision(3));
  const identity = $("identity");
  const rounding = 1e-4 * Math.max(1, Math.abs(score), Math.abs(bias), Math.abs(sum));  // float32 through the net
  if (s.method === "ours" && Math.abs(score - sum - bias) <= rounding) {
    identity.textContent = `S = Σ w·h + b: the contributions at ${layer.name} and the bias add up to the score ` +
      "(the gap is float32 rounding).";
    identity.className = "identity holds";
  } else if (s.method === "ours") {
    identity.textContent = `The contributions and the bias miss the score by ${Math.abs(score - sum - bias)}: ` +
      "more than float32 rounding, so this decomposition is not exact.";
    identity.className = "identity fails";
  } else {
    identity.textContent = `Grad-CAM is not a decomposition: its sum and the bias miss the score by ` +
      `${Math.abs(score - sum - bias).toPrecision(3)}.`;
    identity.className = "identity fails";
  }
  const canvas = $("map");
  canvas.dataset.key = `${s.photo}/${layer.name}/${s.cls}/${s.method}/${s.opacity}/${s.scale}`;
  PWA.renders += 1;
}

// ------------------------------------------------------------------------------------------ controls

function setup() {
  const select = $("photo"), strip = $("thumbnails");
  for (const p of META.photos) {
    const option = document.createElement("option");
    option.value = p.name;
    option.textContent = `${p.name}: ${p.description}`;
    select.appendChild(option);
    const button = document.createElement("button");
    button.dataset.photo = p.name;
    button.title = p.description;
    const img = document.createElement("img");
    img.src = p.thumbnail;
    img.alt = p.name;
    button.appendChild(img);
    button.addEventListener("click", () => showPhoto(p.name));
    strip.appendChild(button);
  }
  select.addEventListener("change", () => showPhoto(select.value));
  $("layer").max = META.layers.length - 1;
  $("layer").addEventListener("input", (e) => { PWA.state.layer = Number(e.target.value); render(); });
  $("class").addEventListener("input", (e) => { PWA.state.cls = Number(e.target.value); render(); });
  $("opacity").addEventListener("input", (e) => { PWA.state.opacity = Number(e.target.value); render(); });
  $("scale").addEventListener("change", (e) => { PWA.state.scale = Number(e.target.value); render(); });
  document.querySelectorAll("#method input").forEach((r) => {
    r.addEventListener("change", () => { if (r.checked) { PWA.state.method = r.value; render(); } });
  });
  const strip_ = META.colours.length / 6;
  const stops = [];
  for (let i = 0; i <= 16; i++) {
    const c = COLOURS[Math.round(i / 16 * (strip_ - 1))];
    stops.push(`rgb(${c[0]},${c[1]},${c[2]}) ${(100 * i / 16).toFixed(2)}%`);
  }
  $("colourbar-strip").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  $("quantisation").textContent = `Stored as: ${META.quantisation}.`;
  $("footer").textContent = `${META.model}, top-${META.top_k} classes, ${META.layers.length} layers, ` +
    `precomputed by pwawidgets ${META.version} in ${META.build_seconds} s. No Python runs here.`;
  document.querySelectorAll(".tabs button").forEach((tab) => {
    tab.addEventListener("click", () => openView(tab.dataset.view));
  });
  showPhoto(META.photos[0].name);
}

function openView(view) {
  document.querySelectorAll(".tabs button").forEach((t) => {
    t.setAttribute("aria-selected", String(t.dataset.view === view));
  });
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  if (view === "regions") window.PWA_REGIONS.open();
}

window.pwaLoadScript = loadScript;
window.pwaStatus = status;
document.addEventListener("DOMContentLoaded", setup);
