// Web GUI of the steel defect cascade: upload or pick a sample, see class overlays, tune thresholds.
// Plain browser JavaScript, no build step. Talks to /gui/config, /gui/analyze, /postprocess/{id} and, for a
// labelled sample, /gui/samples/{name}/truth (its ground truth, drawn as dashed outlines on request).
// Every class-dependent part (legend, toggles, sliders, overlay colours, view shape) is built from
// /gui/config, i.e. from the served bundle's manifest: nothing here knows a class set or an image size.
"use strict";

(() => {
  const KEY_STORAGE = "cascade-api-key";
  const $ = (selector) => document.querySelector(selector);
  const canvas = $("#view");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const state = {
    config: null, // {bundle, runtime, device, classes: [{class_id, name, colour, params}], image_size, samples}
    result: null, // last SessionResponse
    image: null, // HTMLImageElement of the analysed image
    layers: {}, // class id -> {fill, outline}: canvases with the class mask (and its border) in its colour
    truth: null, // class id -> dashed-outline canvas of the sample's labelled mask; null: no labels
    truthClasses: null, // class ids the shown sample's labels hold (null: unlabelled image)
    visible: {}, // class id -> bool
    seq: 0, // request counter: answers to superseded requests are dropped
    renders: 0,
    timer: null,
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function setStatus(text, isError = false) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function setPageState(value) {
    document.body.dataset.state = value;
  }

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.ok) return response.json();
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not JSON: keep the status text
    }
    if (response.status === 401) $("#key-form").hidden = false;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser could not display the image"));
      img.src = src;
    });
  }

  // ------------------------------------------------------------------ start-up
  async function loadConfig() {
    for (;;) {
      try {
        state.config = await api("/gui/config");
        break;
      } catch (error) {
        if (error.status === 503) {
          setStatus("The model is loading…");
          await sleep(1000);
          continue;
        }
        setStatus(error.status === 401 ? "Enter the API key above." : error.message, true);
        setPageState("error");
        return;
      }
    }
    const c = state.config;
    $("#model-info").textContent = `${c.bundle} · ${c.classes.length} classes · runtime ${c.runtime} · ${c.device}`;
    if (c.image_size) sizeCanvas(c.image_size[1], c.image_size[0]);
    buildLegend();
    buildTable();
    buildSamples();
    setStatus("Upload an image or pick a sample.");
    setPageState("idle");
  }

  function sizeCanvas(width, height) {
    // full width, but no taller than 70% of the window: a square image is not blown up to the page width
    canvas.width = width;
    canvas.height = height;
    canvas.style.maxWidth = `calc(70vh * ${width} / ${height})`;
  }

  function swatch(colour) {
    const box = document.createElement("span");
    box.className = "swatch";
    box.style.background = `rgb(${colour.join(",")})`;
    return box;
  }

  function buildLegend() {
    const legend = $("#legend");
    legend.replaceChildren();
    for (const cls of state.config.classes) {
      const item = document.createElement("li");
      item.dataset.class = String(cls.class_id);
      item.append(swatch(cls.colour), cls.name);
      legend.append(item);
    }
  }

  function buildSamples() {
    const box = $("#samples");
    box.replaceChildren();
    for (const sample of state.config.samples) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.sample = sample.name;
      const name = document.createElement("span");
      name.className = "sample-name";
      name.textContent = sample.name;
      const holds = document.createElement("span");
      holds.className = "sample-classes";
      if (sample.classes === null || sample.classes === undefined) {
        holds.textContent = "unlabelled";
        button.title = `${sample.name}: no labels beside it`;
      } else if (sample.classes.length === 0) {
        holds.textContent = "clean";
        button.title = `${sample.name}: labelled, no defect`;
      } else {
        const names = sample.classes.map((id) => classById(id)?.name ?? `class ${id}`);
        for (const id of sample.classes) {
          const cls = classById(id);
          const chip = document.createElement("span");
          chip.className = "chip";
          chip.dataset.class = String(id);
          if (cls) chip.append(swatch(cls.colour));
          chip.append(cls ? cls.name : `class ${id}`);
          holds.append(chip);
        }
        button.title = `${sample.name}: labelled ${names.join(", ")}`;
      }
      button.dataset.classes = sample.classes ? sample.classes.join(",") : "";
      button.append(name, holds);
      button.addEventListener("click", () => {
        const form = new FormData();
        form.append("sample", sample.name);
        analyze(form, sample);
      });
      box.append(button);
    }
  }

  function classById(id) {
    return state.config.classes.find((c) => c.class_id === id);
  }

  function slider(cls, value, max = 1, step = 0.01) {
    const cell = document.createElement("td");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: "0", max: String(max), step: String(step), value: String(value) });
    input.className = cls;
    const output = document.createElement("output");
    const digits = step < 1 ? 2 : 0;
    output.textContent = Number(value).toFixed(digits);
    input.addEventListener("input", () => {
      output.textContent = Number(input.value).toFixed(digits);
      schedulePostprocess();
    });
    cell.append(input, output);
    return cell;
  }

  function minAreaMax(minArea) {
    // the slider reaches well past the bundle's value; an image's own area caps nothing here
    return Math.max(1000, Math.ceil((4 * minArea) / 100) * 100);
  }

  function buildTable() {
    const body = $("#classes tbody");
    body.replaceChildren();
    for (const cls of state.config.classes) {
      state.visible[cls.class_id] = true;
      const row = document.createElement("tr");
      row.dataset.class = String(cls.class_id);
      const show = document.createElement("td");
      const toggle = document.createElement("input");
      Object.assign(toggle, { type: "checkbox", checked: true, className: "toggle" });
      toggle.setAttribute("aria-label", `show ${cls.name}`);
      toggle.addEventListener("change", () => {
        state.visible[cls.class_id] = toggle.checked;
        render();
      });
      show.append(toggle);
      const name = document.createElement("td");
      name.append(swatch(cls.colour), `${cls.class_id} · ${cls.name}`);
      const cells = ["prob num", "present", "area num"].map((c) => {
        const td = document.createElement("td");
        td.className = c;
        td.textContent = "–";
        return td;
      });
      const copyCell = document.createElement("td");
      const copy = document.createElement("button");
      Object.assign(copy, { type: "button", className: "copy-rle", textContent: "Copy RLE", disabled: true });
      copy.addEventListener("click", () => copyRle(cls.class_id, copy));
      copyCell.append(copy);
      row.append(
        show,
        name,
        ...cells,
        slider("prob-threshold", cls.params.prob_threshold),
        slider("pixel-threshold", cls.params.pixel_threshold),
        slider("min-area", cls.params.min_area, minAreaMax(cls.params.min_area), 1),
        copyCell,
      );
      body.append(row);
    }
  }

  // ------------------------------------------------------------------ analysing and post-processing
  async function analyze(form, sample = null) {
    const seq = ++state.seq;
    setPageState("busy");
    setStatus("Analysing…");
    // a labelled sample's ground truth is fetched alongside; without it the page still shows the analysis
    const truthUrl = sample && sample.truth_url;
    const truth = truthUrl ? api(truthUrl).catch(() => null) : Promise.resolve(null);
    try {
      const result = await api("/gui/analyze", { method: "POST", body: form });
      const labels = await truth;
      if (seq !== state.seq) return;
      const keep = $("#keep-thresholds").checked && state.result !== null;
      await setTruth(labels);
      await show(result, true, keep);
      if (keep) schedulePostprocess(); // the new image under the thresholds the user had set
    } catch (error) {
      if (seq === state.seq) {
        clearResult(); // an error must not leave the previous image's result on screen
        setStatus(error.message, true);
        setPageState("error");
      }
    }
  }

  function clearResult() {
    state.result = null;
    state.image = null;
    state.layers = {};
    setTruth(null);
    showOod(null);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const row of document.querySelectorAll("#classes tbody tr")) {
      for (const cell of row.querySelectorAll(".prob, .present, .area")) {
        cell.textContent = "–";
        cell.title = "";
      }
      row.querySelector(".copy-rle").disabled = true;
      row.classList.remove("no-map");
    }
    $("#image-id").textContent = "";
    $("#download-csv").disabled = true;
  }

  function currentParams() {
    return Array.from(document.querySelectorAll("#classes tbody tr")).map((row) => ({
      class_id: Number(row.dataset.class),
      prob_threshold: Number(row.querySelector(".prob-threshold").value),
      pixel_threshold: Number(row.querySelector(".pixel-threshold").value),
      min_area: Number(row.querySelector(".min-area").value),
    }));
  }

  function schedulePostprocess() {
    if (!state.result) return;
    clearTimeout(state.timer);
    state.timer = setTimeout(postprocess, 60);
  }

  async function postprocess() {
    if (!state.result) return;
    const seq = ++state.seq;
    setPageState("busy");
    try {
      const result = await api(`/postprocess/${state.result.session_id}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ classes: currentParams() }),
      });
      if (seq === state.seq) await show(result, false);
    } catch (error) {
      if (seq !== state.seq) return;
      if (error.status === 404) clearResult(); // the cached analysis is gone: its result can no longer change
      setStatus(error.status === 404 ? "The analysis expired; analyse the image again." : error.message, true);
      setPageState("error");
    }
  }

  async function maskLayer(pngBase64, colour, width, height, fill = true) {
    const mask = await loadImage(`data:image/png;base64,${pngBase64}`);
    const layer = document.createElement("canvas");
    layer.width = width;
    layer.height = height;
    const lctx = layer.getContext("2d", { willReadFrequently: true });
    lctx.drawImage(mask, 0, 0);
    const pixels = lctx.getImageData(0, 0, width, height);
    const data = pixels.data;
    const on = new Uint8Array(width * height);
    for (let i = 0, p = 0; i < data.length; i += 4, p += 1) {
      on[p] = data[i] > 127 ? 1 : 0;
      data[i] = colour[0];
      data[i + 1] = colour[1];
      data[i + 2] = colour[2];
      data[i + 3] = on[p] ? 255 : 0;
    }
    if (!fill) return { outline: outlineLayer(on, colour, width, height, true) };
    lctx.putImageData(pixels, 0, 0);
    return { fill: layer, outline: outlineLayer(on, colour, width, height) };
  }

  const DASH = 6; // px of colour, then px of white, along the ground truth's outline

  function outlineLayer(on, colour, width, height, dashed = false) {
    // the mask's border, 2 px wide inside the mask: small or overlapped defects stay visible when scaled down;
    // dashed (class colour and white, diagonally), it is the ground truth, told apart from the solid prediction
    const at = (x, y) => (x >= 0 && y >= 0 && x < width && y < height ? on[y * width + x] : 0);
    const edge = new Uint8Array(width * height);
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        if (on[y * width + x] && !(at(x - 1, y) && at(x + 1, y) && at(x, y - 1) && at(x, y + 1))) edge[y * width + x] = 1;
      }
    }
    const layer = document.createElement("canvas");
    layer.width = width;
    layer.height = height;
    const lctx = layer.getContext("2d");
    const pixels = lctx.createImageData(width, height);
    const data = pixels.data;
    const near = (x, y) => x >= 0 && y >= 0 && x < width && y < height && edge[y * width + x];
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const p = y * width + x;
        if (!on[p] || !(edge[p] || near(x - 1, y) || near(x + 1, y) || near(x, y - 1) || near(x, y + 1))) continue;
        const gap = dashed && Math.floor((x + y) / DASH) % 2 === 1;
        data.set(gap ? [255, 255, 255, 255] : [colour[0], colour[1], colour[2], 255], 4 * p);
      }
    }
    lctx.putImageData(pixels, 0, 0);
    return layer;
  }

  const SLIDERS = [
    ["prob-threshold", "prob_threshold", 2],
    ["pixel-threshold", "pixel_threshold", 2],
    ["min-area", "min_area", 0],
  ];

  async function show(result, newImage, keepSliders = false) {
    if (newImage) {
      state.image = await loadImage(`data:image/jpeg;base64,${result.image_jpeg}`);
      sizeCanvas(result.width, result.height);
      for (const p of keepSliders ? [] : result.params) {
        const row = document.querySelector(`#classes tr[data-class="${p.class_id}"]`);
        for (const [cls, key, digits] of SLIDERS) {
          const input = row.querySelector(`.${cls}`);
          input.value = String(p[key]);
          input.nextElementSibling.textContent = Number(p[key]).toFixed(digits);
        }
        // a class closed by tuning never opens its gate, so its gate slider would change nothing
        const gate = row.querySelector(".prob-threshold");
        gate.disabled = Boolean(p.closed);
        gate.title = p.closed ? "gate closed by tuning: this bundle never predicts the class" : "";
      }
    }
    const layers = {};
    for (const cls of state.config.classes) {
      layers[cls.class_id] = await maskLayer(result.mask_png[String(cls.class_id)], cls.colour, result.width, result.height);
    }
    state.layers = layers;
    state.result = result;
    for (const c of result.classes) {
      const row = document.querySelector(`#classes tr[data-class="${c.class_id}"]`);
      row.querySelector(".prob").textContent = c.probability.toFixed(3);
      const present = row.querySelector(".present");
      present.textContent = c.present ? "yes" : "no";
      present.title = c.present ? "" : whyAbsent(c, result);
      if (!c.present) present.textContent = `no (${present.title})`;
      row.querySelector(".area").textContent = String(c.area);
      row.querySelector(".copy-rle").disabled = !c.rle;
      row.classList.toggle("no-map", !result.segmented.includes(c.class_id));
    }
    $("#image-id").textContent = `${result.image_id} (${result.width}×${result.height})`;
    $("#download-csv").disabled = false;
    showOod(result);
    render();
    const found = result.classes.filter((c) => c.present).map((c) => c.name);
    let text = found.length ? `Defects: ${found.join(", ")}.` : "No defect found.";
    if (state.truthClasses) {
      const labelled = state.truthClasses.map((id) => classById(id)?.name ?? `class ${id}`);
      text += ` Labelled: ${labelled.length ? labelled.join(", ") : "no defect"}.`;
    }
    setStatus(text);
    state.renders += 1;
    document.body.dataset.renders = String(state.renders);
    setPageState("ready");
  }

  function render() {
    if (!state.image) return;
    const opacity = Number($("#opacity").value) / 100;
    ctx.globalAlpha = 1;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(state.image, 0, 0);
    // larger masks first, so a small defect is drawn on top of a large one it overlaps
    const area = (id) => (state.result ? state.result.classes.find((c) => c.class_id === id)?.area ?? 0 : 0);
    const order = state.config.classes
      .map((cls) => cls.class_id)
      .filter((id) => state.layers[id] && state.visible[id])
      .sort((a, b) => area(b) - area(a));
    if ($("#fill").checked) {
      ctx.globalAlpha = opacity;
      for (const id of order) ctx.drawImage(state.layers[id].fill, 0, 0);
    }
    ctx.globalAlpha = 1;
    if ($("#outline").checked) for (const id of order) ctx.drawImage(state.layers[id].outline, 0, 0);
    if (state.truth && $("#truth").checked) {
      for (const cls of state.config.classes) {
        const layer = state.truth[cls.class_id];
        if (layer && state.visible[cls.class_id]) ctx.drawImage(layer.outline, 0, 0);
      }
    }
  }

  async function setTruth(labels) {
    // labels: a SampleTruthResponse, or null for an image without ground truth
    state.truth = null;
    state.truthClasses = labels ? labels.classes : null;
    if (labels) {
      const layers = {};
      for (const cls of state.config.classes) {
        const png = labels.mask_png[String(cls.class_id)];
        if (png) layers[cls.class_id] = await maskLayer(png, cls.colour, labels.width, labels.height, false);
      }
      state.truth = layers;
    }
    const toggle = $("#truth");
    toggle.disabled = !labels;
    toggle.closest("label").title = labels ? "" : "only labelled samples have a ground truth";
  }

  function showOod(result) {
    // the warning shows only when the bundle has a reference and the image is beyond its threshold
    const badge = $("#ood-badge");
    const flagged = result && result.ood_score != null && result.in_distribution === false;
    badge.hidden = !flagged;
    if (!flagged) return;
    const threshold = state.config.ood_threshold;
    const limit = threshold == null ? "" : ` > threshold ${threshold.toFixed(2)}`;
    $("#ood-detail").textContent = `out-of-distribution score ${result.ood_score.toFixed(2)}${limit}`;
  }

  function whyAbsent(c, result) {
    // the class-specific reason a class is "not present": its gate stayed closed, or its mask was emptied
    const p = result.params.find((q) => q.class_id === c.class_id) || {};
    if (p.closed) return "gate closed by tuning";
    if (!result.segmented.includes(c.class_id) || c.probability < p.prob_threshold) {
      return `p ${c.probability.toFixed(2)} < gate ${Number(p.prob_threshold).toFixed(2)}`;
    }
    return `gate open, but no region ≥ ${p.min_area} px above pixel threshold ${Number(p.pixel_threshold).toFixed(2)}`;
  }

  // ------------------------------------------------------------------ copy and download
  async function copyRle(classId, button) {
    const entry = state.result && state.result.classes.find((c) => c.class_id === classId);
    if (!entry || !entry.rle) return;
    try {
      await navigator.clipboard.writeText(entry.rle);
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = entry.rle;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy RLE"), 1200);
  }

  function csvField(value) {
    return /[",\n\r]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
  }

  function downloadCsv() {
    const result = state.result;
    if (!result) return;
    const lines = ["ImageId_ClassId,EncodedPixels"];
    for (const c of result.classes) lines.push(`${csvField(`${result.image_id}_${c.class_id}`)},${c.rle}`);
    const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "submission.csv";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // ------------------------------------------------------------------ wiring
  $("#file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    analyze(form);
    event.target.value = "";
  });
  $("#opacity").addEventListener("input", () => {
    $("#opacity-value").textContent = `${$("#opacity").value}%`;
    render();
  });
  $("#fill").addEventListener("change", render);
  $("#outline").addEventListener("change", render);
  $("#truth").addEventListener("change", render);
  $("#download-csv").addEventListener("click", downloadCsv);
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, $("#api-key").value);
    $("#key-form").hidden = true;
    loadConfig();
  });

  loadConfig();
})();
