// woof web page: pick / drop / photograph an image, POST it to /predict, show the top 3.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const maxBytes = parseInt(document.body.dataset.maxUploadBytes, 10) || 10 * 1024 * 1024;
  const els = {
    drop: $("drop"), file: $("file"), camera: $("camera"), preview: $("preview"), dropText: $("drop-text"),
    model: $("model"), modelInfo: $("model-info"), status: $("status"), error: $("error"),
    result: $("result"), unknown: $("unknown"), answer: $("answer"), top: $("top"), meta: $("meta"),
    limit: $("limit"),
  };
  let current = null; // the File being shown
  let previewUrl = null;
  let request = 0; // answers to older requests are dropped
  let models = {};

  const mb = (bytes) => (bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 1).replace(/\.0+$/, "");
  els.limit.textContent = `JPEG, PNG, WebP, GIF… up to ${mb(maxBytes)} MB`;

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
    els.status.textContent = "";
  }
  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }

  // ------------------------------------------------------------------ models
  function cardText(m) {
    // GET /models: {"name", "version", "card": {"architecture", "format", "input_size", "val_top1",
    // "val_imagenet_subset_top1"}, ...}
    const card = m.card || {};
    const pct = (v) => (typeof v === "number" ? `${(v <= 1 ? v * 100 : v).toFixed(1)} %` : null);
    const parts = [];
    if (card.architecture) parts.push(card.architecture);
    if (card.format) parts.push(card.format);
    if (card.input_size) parts.push(`${card.input_size} px`);
    if (pct(card.val_top1)) parts.push(`top-1 ${pct(card.val_top1)} on val`);
    if (pct(card.val_imagenet_subset_top1)) parts.push(`${pct(card.val_imagenet_subset_top1)} on its ImageNet-val subset`);
    return parts.join(" · ");
  }

  // The first choice, "Automatic", names no model: the gateway answers with its default model, or with
  // the A/B split's group of this browser (sticky: a random id kept in localStorage, sent as X-Client-Id).
  let defaultName = null;
  let split = null;

  async function loadModels() {
    try {
      const response = await fetch("/models", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const list = (body.models || []).filter((m) => m && m.name);
      if (!list.length) throw new Error("no models");
      defaultName = body.default || (list.find((m) => m.default === true) || {}).name || null;
      split = body.split || null;
      els.model.textContent = "";
      models = {};
      const auto = document.createElement("option");
      auto.value = "";
      auto.textContent = split ? `Automatic (A/B test: ${split.a} / ${split.b})` :
        `Automatic (${defaultName || "the default model"})`;
      els.model.append(auto);
      for (const m of list) {
        models[m.name] = m;
        const option = document.createElement("option");
        option.value = m.name;
        const version = m.version || (m.card && m.card.version);
        option.textContent = `${m.name}${version ? " " + version : ""}${m.name === defaultName ? " (default)" : ""}` +
          (m.status && m.status !== "READY" ? " (not ready)" : "");
        els.model.append(option);
      }
      els.model.value = "";
      els.model.disabled = false;
      showModelInfo();
    } catch (e) {
      els.model.textContent = "";
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "Automatic";
      els.model.append(option);
      els.model.disabled = true;
      els.modelInfo.textContent = "The model list is not available right now; the default model will answer.";
    }
  }

  function showModelInfo() {
    const name = els.model.value;
    if (name) {
      els.modelInfo.textContent = models[name] ? cardText(models[name]) : "";
    } else if (split) {
      els.modelInfo.textContent = `An A/B test is running: ${split.b_percent} % of visitors get ${split.b}, ` +
        `the others ${split.a}.`;
    } else {
      const m = models[defaultName];
      els.modelInfo.textContent = m ? cardText(m) : "";
    }
  }

  function clientId() {
    try {
      let id = localStorage.getItem("woof-client-id");
      if (!id) {
        // crypto.getRandomValues works on plain http too (randomUUID needs https)
        id = "web-" + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
        localStorage.setItem("woof-client-id", id);
      }
      return id;
    } catch (e) {
      return null; // storage disabled: the gateway falls back to the address
    }
  }

  // ------------------------------------------------------------------ files
  function setPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    els.preview.hidden = true;
    els.preview.removeAttribute("src");
    els.dropText.hidden = false;
    if (!file || !file.type.startsWith("image/")) return;
    previewUrl = URL.createObjectURL(file);
    els.preview.onload = () => { els.preview.hidden = false; els.dropText.hidden = true; };
    els.preview.onerror = () => { els.preview.hidden = true; els.dropText.hidden = false; };
    els.preview.src = previewUrl;
  }

  function checkFile(file) {
    if (file.size === 0) return "This file is empty. Please choose a photo.";
    if (file.size > maxBytes) {
      return `This file is too large (${mb(file.size)} MB). The limit is ${mb(maxBytes)} MB: ` +
        "please choose a smaller photo, or resize it first.";
    }
    // Browsers give "" for types they do not know: the server decides then.
    if (file.type && !file.type.startsWith("image/")) {
      return `“${file.name}” is not an image (${file.type}). Please choose a photo (JPEG, PNG, WebP, GIF…).`;
    }
    return null;
  }

  function useFile(file) {
    if (!file) return;
    current = null;
    clearError();
    els.result.hidden = true;
    const problem = checkFile(file);
    setPreview(problem ? null : file);
    if (problem) {
      showError(problem);
      return;
    }
    current = file;
    predict();
  }

  // ------------------------------------------------------------------ predict
  function errorMessage(status, body, retryAfter) {
    const code = body && body.error && body.error.code;
    const detail = body && body.error && body.error.message;
    switch (status) {
      case 400: return `The server did not receive a photo${detail ? ` (${detail})` : ""}. Please try again.`;
      case 413: return `This file is too large for the server (the limit is ${mb(maxBytes)} MB). ` +
        "Please choose a smaller photo.";
      case 415: return "This file is not an image woof can read. Please choose a photo (JPEG, PNG, WebP, GIF…).";
      case 422: return "This file could not be read as an image: it may be damaged, or a format woof does not " +
        `support.${detail ? ` (${detail})` : ""}`;
      case 404: return `That model is not available any more${detail ? ` (${detail})` : ""}. ` +
        "Reload the page to see the current models.";
      case 429: case 503: return "The classifier is busy or starting up. Please try again " +
        (retryAfter ? `in ${retryAfter} s.` : "in a few seconds.");
      case 504: return "The classifier took too long to answer. Please try again.";
      default: return `Something went wrong on the server (HTTP ${status}${code ? `, ${code}` : ""}). ` +
        "Please try again.";
    }
  }

  async function predict() {
    if (!current) return;
    const mine = ++request;
    clearError();
    els.status.textContent = "Looking at your photo…";
    const form = new FormData();
    form.append("file", current, current.name || "photo.jpg");
    const params = new URLSearchParams({ top_k: "3" });
    if (els.model.value) params.set("model", els.model.value);
    let response, body;
    try {
      const headers = { Accept: "application/json" };
      const id = clientId();
      if (id) headers["X-Client-Id"] = id;
      response = await fetch(`/predict?${params}`, { method: "POST", body: form, headers });
      body = await response.json().catch(() => null);
    } catch (e) {
      if (mine === request) showError("Cannot reach the server. Check your connection and try again.");
      return;
    }
    if (mine !== request) return;
    if (!response.ok || !body || !Array.isArray(body.top_k)) {
      showError(errorMessage(response.status, body, response.headers.get("Retry-After")));
      els.result.hidden = true;
      return;
    }
    showResult(body);
  }

  function showResult(body) {
    els.status.textContent = "";
    const top = body.top_k.slice(0, 3);
    // answer: "breed" (one of the 10), "other_dog" (a dog of another breed), "not_dog"
    const answer = body.answer || (body.is_known_breed === false ? "not_dog" : "breed");
    const known = answer === "breed";
    els.unknown.hidden = known;
    els.unknown.dataset.answer = answer;
    if (answer === "other_dog") {
      const other = body.other_breed;
      els.unknown.textContent = other && other.name
        ? `This looks like ${/^[aeiou]/i.test(other.name) ? "an" : "a"} ${other.name} \u2014 not one of the ` +
          "10 breeds woof knows. The closest of the 10:"
        : "A dog, but probably not one of the 10 breeds woof knows. The closest of the 10:";
    } else if (answer === "not_dog") {
      els.unknown.textContent = "This does not look like a dog. If it is one, the closest of the 10 breeds:";
    }
    els.answer.textContent = "";
    if (known && top.length) {
      const breed = document.createElement("span");
      breed.className = "answer-breed";
      breed.textContent = top[0].breed;
      els.answer.append(/^[aeiou]/i.test(top[0].breed) ? "Looks like an " : "Looks like a ", breed);
    }
    els.answer.hidden = !known;
    els.top.textContent = "";
    for (const entry of top) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "breed";
      name.textContent = entry.breed;
      if (entry.wnid) name.title = entry.wnid;
      const pct = document.createElement("span");
      pct.className = "pct";
      const p = Math.max(0, Math.min(1, Number(entry.probability) || 0));
      pct.textContent = `${(p * 100).toFixed(1)} %`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("role", "presentation");
      const fill = document.createElement("span");
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      bar.append(fill);
      li.append(name, pct, bar);
      els.top.append(li);
    }
    const latency = typeof body.latency_ms === "number" ? `${Math.round(body.latency_ms)} ms` : "";
    const group = { "split-a": "A", "split-b": "B" }[body.route];
    els.meta.textContent = `Model ${body.model}${body.model_version ? " " + body.model_version : ""}` +
      (group ? ` · A/B test: group ${group}` : "") + (latency ? ` · answered in ${latency}` : "");
    els.result.hidden = false;
  }

  // ------------------------------------------------------------------ events
  els.file.addEventListener("change", () => { useFile(els.file.files[0]); els.file.value = ""; });
  els.camera.addEventListener("change", () => { useFile(els.camera.files[0]); els.camera.value = ""; });
  els.model.addEventListener("change", () => { showModelInfo(); predict(); });

  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "dragend"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("dragging"));
  }
  els.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    els.drop.classList.remove("dragging");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) useFile(file);
  });
  // A photo dropped anywhere else must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) useFile(file);
  });
  // Paste a copied image (desktop).
  window.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.files : [])][0];
    if (item) useFile(item);
  });

  loadModels();
})();
