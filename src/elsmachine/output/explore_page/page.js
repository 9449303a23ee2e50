"use strict";
// The explore page: every array arrives base64-encoded in the JSON block #data; images are
// drawn onto canvases from them. No request leaves the page.
(function () {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const TYPES = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, float32: Float32Array };

  function decode(a) {
    const bin = atob(a.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return { v: new TYPES[a.type](bytes.buffer), shape: a.shape };
  }

  // A colour of its own for training image n (hues spread by the golden ratio), a distinct one
  // for the sources a legend names, grey for pixels without a dominant patch.
  const LEGEND = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207]];
  function hsv(h, s, v) {
    const i = Math.floor(h * 6), f = h * 6 - i, p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
    const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
    return rgb.map((c) => Math.round(c * 255));
  }
  function sourceColour(n, legend) {
    const at = legend ? legend.indexOf(n) : -1;
    if (at >= 0 && at < LEGEND.length) return LEGEND[at];
    return hsv((n * 0.6180339887498949) % 1, 0.3, 0.95);
  }
  // A perceptual ramp (dark blue to yellow) for the effective number of candidates.
  const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function ramp(u) {
    u = Math.max(0, Math.min(1, u)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(u)), f = u - i;
    return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
  }

  // Draw an [H, W] picture given by rgb(i, j) onto a canvas, each pixel scale x scale.
  function paint(canvas, H, W, scale, rgb) {
    canvas.width = W * scale;
    canvas.height = H * scale;
    const off = document.createElement("canvas");
    off.width = W;
    off.height = H;
    const ctx = off.getContext("2d");
    const img = ctx.createImageData(W, H);
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < W; j++) {
        const c = rgb(i, j), o = (i * W + j) * 4;
        img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    const c2 = canvas.getContext("2d");
    c2.imageSmoothingEnabled = false;
    c2.drawImage(off, 0, 0, W * scale, H * scale);
  }
  // The image at ``offset`` of a uint8 array of [C, H, W] images.
  function imageRGB(arr, offset, C, H, W) {
    return (i, j) => {
      if (C === 1) { const g = arr[offset + i * W + j]; return [g, g, g]; }
      return [0, 1, 2].map((c) => arr[offset + (c * H + i) * W + j]);
    };
  }

  const summary = [];

  // ------------------------------------------------------------------ samples
  if (DATA.samples) {
    const S = DATA.samples, steps = S.steps, B = S.count;
    const xt = decode(S.x_t), xh = decode(S.x0_hat), fin = decode(S.final);
    const src = decode(S.source).v, srcIndex = decode(S.source_index).v, srcPix = decode(S.source_pixel).v;
    const weight = decode(S.weight).v, eff = decode(S.effective).v, train = decode(S.train);
    const [, , C, H, W] = xt.shape;
    const HW = H * W, scale = Math.max(3, Math.floor(224 / Math.max(H, W)));
    let b = 0, s = steps - 1, last = null;
    const at = (st, bb, i, j) => (st * B + bb) * HW + i * W + j;
    const imgOffset = (st, bb) => (st * B + bb) * C * HW;

    document.getElementById("samples-section").hidden = false;
    summary.push(`${B} sample${B > 1 ? "s" : ""}, ${steps} steps`);
    const slider = document.getElementById("step");
    slider.max = String(steps - 1);
    slider.value = String(s);

    // Legend of the most used sources of a step's dominant patches.
    function topSources(st, bb, k) {
      const counts = new Map();
      for (let p = 0; p < HW; p++) {
        const o = (st * B + bb) * HW + p;
        if (weight[o] / 255 >= DATA.dominant) counts.set(srcIndex[src[o]], (counts.get(srcIndex[src[o]]) || 0) + 1);
      }
      return [...counts.entries()].sort((x, y) => y[1] - x[1]).slice(0, k);
    }
    function mosaicRGB(st, bb, legend) {
      const img = imageRGB(xh.v, imgOffset(st, bb), C, H, W);
      return (i, j) => {
        const o = at(st, bb, i, j), bright = 0.3 + 0.7 * (img(i, j).reduce((x, y) => x + y, 0) / (3 * 255));
        const c = weight[o] / 255 >= DATA.dominant ? sourceColour(srcIndex[src[o]], legend) : [115, 115, 115];
        return c.map((v) => Math.round(v * bright));
      };
    }
    // The effective number of candidates on one log scale for every step and sample (its range
    // comes with the data), so that a colour reads as the same number wherever it appears; each
    // map's legend (.scale) shows that range.
    const [effLo, effHi] = S.effective_range, logLo = Math.log(effLo), logSpan = Math.log(effHi) - logLo;
    function effectiveRGB(st, bb) {
      return (i, j) => {
        const v = eff[at(st, bb, i, j)];
        return ramp(logSpan > 0 && v > effLo ? (Math.log(v) - logLo) / logSpan : 0);
      };
    }
    const count = (v) => (v >= 100 ? String(Math.round(v)) : v.toFixed(1));
    for (const box of document.querySelectorAll("#samples-section .scale")) {
      const lo = document.createElement("span"), bar = document.createElement("span"), hi = document.createElement("span");
      lo.className = "scale-min";
      lo.textContent = count(effLo);
      bar.className = "scale-bar";
      bar.style.background = `linear-gradient(to right, ${RAMP.map((c) => `rgb(${c.join(",")})`).join(", ")})`;
      hi.className = "scale-max";
      hi.textContent = count(effHi);
      box.title = `effective number of candidates, log scale: ${count(effLo)} to ${count(effHi)} over every step and sample`;
      box.append(lo, bar, hi);
    }
    function drawStep() {
      const legend = topSources(s, b, 9).map((e) => e[0]);
      paint(document.getElementById("xt"), H, W, scale, imageRGB(xt.v, imgOffset(s, b), C, H, W));
      paint(document.getElementById("xhat"), H, W, scale, imageRGB(xh.v, imgOffset(s, b), C, H, W));
      paint(document.getElementById("mosaic"), H, W, scale, mosaicRGB(s, b, legend));
      paint(document.getElementById("effective"), H, W, scale, effectiveRGB(s, b));
      const k = S.patch_sizes[s];
      document.getElementById("step-label").textContent =
        `step ${s + 1} of ${steps}: t = ${S.ts[s].toFixed(3)}` + (k > 0 ? `, patch size ${k}` : "");
      slider.value = String(s);
      if (last) showPixel(last[0], last[1]);
    }
    function drawFinal() {
      const st = steps - 1, top = topSources(st, b, 9), legend = top.map((e) => e[0]);
      paint(document.getElementById("final-image"), H, W, scale, imageRGB(fin.v, b * C * HW, C, H, W));
      paint(document.getElementById("final-mosaic"), H, W, scale, mosaicRGB(st, b, legend));
      paint(document.getElementById("final-effective"), H, W, scale, effectiveRGB(st, b));
      const box = document.getElementById("legend");
      box.textContent = "";
      for (const [n, count] of top) {
        const fig = document.createElement("figure"), cv = document.createElement("canvas");
        const m = srcIndex.indexOf(n);
        paint(cv, H, W, 2, imageRGB(train.v, m * C * HW, C, H, W));
        cv.style.borderColor = `rgb(${sourceColour(n, legend).join(",")})`;
        const cap = document.createElement("figcaption");
        cap.textContent = `#${n}: ${count} px`;
        fig.append(cv, cap);
        box.append(fig);
      }
    }
    function showPixel(i, j) {
      last = [i, j];
      const o = at(s, b, i, j), m = src[o], n = srcIndex[m], p = srcPix[o], si = Math.floor(p / W), sj = p % W;
      let di = Math.abs(si - i), dj = Math.abs(sj - j);
      if (S.padding === "circular") { di = Math.min(di, H - di); dj = Math.min(dj, W - dj); }
      document.getElementById("info-pixel").textContent = `(${i}, ${j})`;
      document.getElementById("info-source").textContent = `#${n}`;
      document.getElementById("info-source-pixel").textContent = `(${si}, ${sj})`;
      document.getElementById("info-weight").textContent = (weight[o] / 255).toFixed(3);
      document.getElementById("info-effective").textContent = eff[o].toFixed(1);
      document.getElementById("info-travel").textContent = Math.sqrt(di * di + dj * dj).toFixed(1);
      const cv = document.getElementById("source-image"), sc = 6;
      paint(cv, H, W, sc, imageRGB(train.v, m * C * HW, C, H, W));
      const k = Math.max(1, S.patch_sizes[s]), h = Math.floor(k / 2), ctx = cv.getContext("2d");
      ctx.strokeStyle = "#ff3b30";
      ctx.lineWidth = 2;
      ctx.strokeRect((sj - h) * sc + 1, (si - h) * sc + 1, k * sc - 2, k * sc - 2);
      document.getElementById("source-caption").textContent =
        `training image #${n}, its ${k} x ${k} patch at (${si}, ${sj}) outlined`;
    }
    for (const id of ["xt", "xhat", "mosaic", "effective"]) {
      const cv = document.getElementById(id);
      cv.addEventListener("mousemove", (e) => {
        const r = cv.getBoundingClientRect();
        const i = Math.floor(((e.clientY - r.top) / r.height) * H), j = Math.floor(((e.clientX - r.left) / r.width) * W);
        if (i >= 0 && i < H && j >= 0 && j < W) showPixel(i, j);
      });
    }
    slider.addEventListener("input", () => { s = Number(slider.value); drawStep(); });
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" && e.target !== slider) return;
      if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        s = Math.max(0, Math.min(steps - 1, s + (e.key === "ArrowRight" ? 1 : -1)));
        drawStep();
        e.preventDefault();
      }
    });
    const grid = document.getElementById("grid");
    for (let bb = 0; bb < B; bb++) {
      const fig = document.createElement("figure"), cv = document.createElement("canvas");
      cv.className = "pixels";
      paint(cv, H, W, 3, imageRGB(fin.v, bb * C * HW, C, H, W));
      const cap = document.createElement("figcaption");
      cap.textContent = `seed ${S.seeds[bb]}` + (S.labels ? `, class ${S.labels[bb]}` : "");
      fig.append(cv, cap);
      fig.dataset.index = String(bb);
      fig.addEventListener("click", () => select(bb));
      grid.append(fig);
    }
    function select(bb) {
      b = bb;
      grid.querySelectorAll("figure").forEach((f) => f.classList.toggle("selected", Number(f.dataset.index) === bb));
      drawStep();
      drawFinal();
    }
    select(0);
  }

  // ------------------------------------------------------------------ comparison
  if (DATA.compare) {
    const P = DATA.compare, imgs = decode(P.images), [R, K, C, H, W] = imgs.shape, names = P.machines;
    document.getElementById("compare-section").hidden = false;
    summary.push(`a comparison of ${names.length} machines over ${R} seeds`);
    const sort = document.getElementById("sort");
    for (const [value, text] of [["seed", "seed"], ...names.map((n) => [n, `r of ${n} (highest first)`])]) {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = text;
      sort.append(o);
    }
    const table = document.getElementById("compare-table");
    function render() {
      const key = sort.value;
      const order = [...P.rows.keys()].sort((x, y) => key === "seed" ? P.rows[x].seed - P.rows[y].seed
        : P.rows[y].r[key] - P.rows[x].r[key]);
      table.textContent = "";
      const head = table.insertRow();
      for (const h of ["seed", "network", ...names.map((n) => `${n} (median r ${(P.medians[n] ?? NaN).toFixed(3)})`)]) {
        const th = document.createElement("th");
        th.textContent = h;
        head.append(th);
      }
      for (const r of order) {
        const row = P.rows[r], tr = table.insertRow();
        tr.insertCell().textContent = `${row.seed}` + (row.label >= 0 ? ` (class ${row.label})` : "");
        for (let k = 0; k < K; k++) {
          const td = tr.insertCell(), cv = document.createElement("canvas");
          paint(cv, H, W, 2, imageRGB(imgs.v, (r * K + k) * C * H * W, C, H, W));
          td.append(cv);
          if (k > 0) {
            const n = names[k - 1];
            td.append(`r ${row.r[n].toFixed(3)}, R² ${row.R2[n].toFixed(3)}`);
          }
        }
      }
    }
    sort.addEventListener("change", render);
    render();
  }

  // ------------------------------------------------------------------ calibration
  if (DATA.calibration) {
    const Cal = DATA.calibration, box = document.getElementById("calibration-charts");
    document.getElementById("calibration-section").hidden = false;
    summary.push("a calibration");
    document.getElementById("calibration-note").textContent =
      `The patch size chosen at each t (criterion: ${Cal.criterion || "?"}, sizes tried: ${(Cal.tried || []).join(", ")})` +
      (Cal.by_size ? "; below it, each size's median criterion per step (darker: better)." : ".");
    const NS = "http://www.w3.org/2000/svg", w = 560, h = 240, m = 36;
    function el(tag, attrs, parent) {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (parent) parent.append(e);
      return e;
    }
    const svg = el("svg", { width: w, height: h, id: "calibration-chart" }, box);
    const kmax = Math.max(...Cal.sizes, ...(Cal.tried || [1])), x = (t) => m + (1 - t) * (w - 2 * m);
    const y = (k) => h - m - (k / kmax) * (h - 2 * m);
    el("line", { x1: m, y1: h - m, x2: w - m, y2: h - m, stroke: "#999" }, svg);
    el("line", { x1: m, y1: m, x2: m, y2: h - m, stroke: "#999" }, svg);
    el("text", { x: w / 2, y: h - 6, "text-anchor": "middle" }, svg).textContent = "t (noise, high to low)";
    el("text", { x: 4, y: m - 10 }, svg).textContent = "patch size";
    for (const t of [1, 0.75, 0.5, 0.25, 0]) el("text", { x: x(t), y: h - m + 14, "text-anchor": "middle" }, svg).textContent = t;
    for (let k = 1; k <= kmax; k += Math.max(2, 2 * Math.round(kmax / 10))) el("text", { x: m - 6, y: y(k) + 4, "text-anchor": "end" }, svg).textContent = k;
    el("polyline", { fill: "none", stroke: "#1f77b4", "stroke-width": 2,
      points: Cal.ts.map((t, i) => `${x(t)},${y(Cal.sizes[i])}`).join(" ") }, svg);
    Cal.ts.forEach((t, i) => el("circle", { cx: x(t), cy: y(Cal.sizes[i]), r: 3, fill: "#1f77b4" }, svg));
    if (Cal.by_size && Cal.tried) {
      const rows = Cal.tried.length, cell = 16, svg2 = el("svg", { width: w, height: rows * cell + 40, id: "criterion-chart" }, box);
      const flat = Cal.by_size.flat(), lo = Math.min(...flat), hi = Math.max(...flat);
      Cal.ts.forEach((t, i) => Cal.tried.forEach((k, j) => {
        const v = Cal.by_size[i][j], u = hi > lo ? (v - lo) / (hi - lo) : 1;
        const r = el("rect", { x: m + i * ((w - 2 * m) / Cal.ts.length), y: j * cell, width: (w - 2 * m) / Cal.ts.length - 1,
          height: cell - 1, fill: `rgb(${ramp(u).join(",")})` }, svg2);
        el("title", {}, r).textContent = `t = ${t.toFixed(3)}, size ${k}: ${v.toFixed(4)}`;
      }));
      Cal.tried.forEach((k, j) => { el("text", { x: m - 6, y: j * cell + 12, "text-anchor": "end" }, svg2).textContent = k; });
    }
  }
  document.getElementById("summary").textContent = summary.join("; ") || "nothing to show";
})();
