"use strict";
// The playground: a form generated from the chosen model's Cog input schema, a run button, the
// prediction's live view (the same server-rendered view as /p/{id}), and the key's recent
// predictions. Everything goes through the public API with the key the user pasted.
(function () {
  const root = document.querySelector(".playground");
  if (!root) return;
  const api = root.dataset.api;
  const pages = root.dataset.pages;
  const part = (role) => root.querySelector(`[data-role="${role}"]`);
  const watch = window.fluxserve;
  let models = [];
  let current = null; // { model, fields: [{name, kind, schema, element}] }

  function headers() {
    return { Authorization: "Bearer " + watch.getKey(), "Content-Type": "application/json" };
  }

  async function apiGet(path) {
    const response = await fetch(api + path, { headers: headers(), cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    return body;
  }

  // --- the key ----------------------------------------------------------------------------------

  function showKeyState(text) {
    part("key-status").textContent = text;
    part("forget").classList.toggle("hidden", !watch.getKey());
  }

  // --- what an empty gallery says: the missing key (none entered, or refused) is not "no predictions"

  const emptyBox = part("gallery-empty");
  // The server's own wording for "no key entered" (it knows whether any key exists, and the command to make one).
  const noKeyNodes = Array.from(emptyBox.childNodes, (node) => node.cloneNode(true));

  function withCommand(before, after) {
    const code = document.createElement("code");
    code.textContent = root.dataset.keysCreate;
    return [before, code, after];
  }

  function showEmpty(state, nodes) {
    emptyBox.dataset.state = state;
    emptyBox.classList.toggle("hidden", state === "none");
    if (state === "no-key") emptyBox.replaceChildren(...noKeyNodes.map((node) => node.cloneNode(true)));
    else if (nodes) emptyBox.replaceChildren(...nodes);
  }

  part("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = part("key").value.trim();
    if (!key) return;
    watch.setKey(key);
    part("key").value = "";
    loadModels();
  });

  part("forget").addEventListener("click", () => {
    watch.setKey("");
    models = [];
    current = null;
    const select = part("model");
    select.replaceChildren(new Option("Paste an API key first"));
    select.disabled = true;
    part("run").disabled = true;
    part("fields").replaceChildren();
    part("gallery").replaceChildren();
    showEmpty("no-key");
    showKeyState("Key forgotten.");
  });

  // --- models and their forms -----------------------------------------------------------------

  async function loadModels() {
    if (!watch.getKey()) {
      showKeyState("Paste an API key to start. It stays in this browser (localStorage).");
      showEmpty("no-key");
      return;
    }
    try {
      models = (await apiGet("/models")).results;
    } catch (error) {
      showKeyState(`The server refused the key: ${error.message}`);
      part("gallery").replaceChildren();
      showEmpty(
        "refused",
        withCommand("The key was refused, so there are no predictions to show. Paste another one above, or create one with ", ".")
      );
      return;
    }
    showKeyState("Using the key saved in this browser.");
    const select = part("model");
    const chosen = select.disabled ? new URLSearchParams(location.search).get("model") : select.value;
    select.replaceChildren(...models.map((m) => new Option(optionLabel(m), `${m.owner}/${m.name}`)));
    select.disabled = false;
    if (chosen && models.some((m) => `${m.owner}/${m.name}` === chosen)) select.value = chosen;
    if (!current || current.ref !== select.value) buildForm();
    else showModelState(models.find((m) => `${m.owner}/${m.name}` === select.value));
    if (!refreshing) loadGallery();
    scheduleRefresh();
  }

  // --- model states: a model still loading (or failed) says so, and the list refreshes until it is ready

  let refreshing = null;

  function stateText(model) {
    if (model.state === "loading") {
      const seconds = Math.max(...model.workers.map((w) => w.seconds || 0));
      return `loading (${Math.round(seconds)} s so far)`;
    }
    if (model.state === "failed") return "failed to load";
    if (model.state === "no_worker") return "no worker";
    return "";
  }

  function optionLabel(model) {
    const state = stateText(model);
    return `${model.owner}/${model.name}` + (state ? ` — ${state}` : "");
  }

  function showModelState(model) {
    const note = part("model-state");
    if (!model || !note) return;
    let text = "";
    if (model.state === "loading") text = `This model is ${stateText(model)}; predictions start once it is ready.`;
    else if (model.state === "failed") text = `This model could not be loaded: ${model.error || "unknown error"}`;
    else if (model.state === "no_worker") text = "No worker serves this model right now; predictions wait in the queue.";
    note.textContent = text;
    note.dataset.state = model.state;
    note.classList.toggle("hidden", !text);
    if (current) part("run").disabled = model.state === "failed";
  }

  function scheduleRefresh() {
    clearTimeout(refreshing);
    refreshing = null;
    if (models.some((m) => m.state === "loading")) refreshing = setTimeout(loadModels, 2000);
  }

  part("model").addEventListener("change", buildForm);

  function resolve(schema, components) {
    // Cog publishes enums as separate schemas referenced through allOf.
    const ref = schema.allOf && schema.allOf[0] && schema.allOf[0].$ref;
    if (!ref) return schema;
    const target = components[ref.split("/").pop()] || {};
    // Replicate's enum fields carry no title of their own (the component's title is the bare field name):
    // leave it unset so the label falls back to the name written as Cog writes titles.
    return { ...target, ...schema, allOf: undefined, title: schema.title };
  }

  function fieldKind(schema) {
    if (schema.enum) return "enum";
    if (schema.type === "boolean") return "boolean";
    if (schema.type === "integer" || schema.type === "number") {
      return schema.minimum !== undefined && schema.maximum !== undefined ? "slider" : "number";
    }
    if (schema.format === "uri") return "file";
    if (schema.type === "array" && schema.items && schema.items.format === "uri") return "files";
    return "string";
  }

  function control(name, schema, kind, required) {
    const id = "input-" + name;
    if (kind === "enum") {
      const select = document.createElement("select");
      select.id = id;
      for (const value of schema.enum) select.append(new Option(String(value), String(value)));
      if (schema.default !== undefined) select.value = String(schema.default);
      return { element: select, input: select };
    }
    if (kind === "boolean") {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = id;
      box.checked = schema.default === true;
      return { element: box, input: box };
    }
    if (kind === "slider") {
      const wrap = document.createElement("div");
      wrap.className = "slider";
      const range = document.createElement("input");
      range.type = "range";
      range.id = id;
      range.min = schema.minimum;
      range.max = schema.maximum;
      range.step = schema.type === "integer" ? 1 : (schema.maximum - schema.minimum) / 100 || "any";
      range.value = schema.default !== undefined ? schema.default : schema.minimum;
      const readout = document.createElement("output");
      readout.htmlFor = id;
      readout.textContent = range.value;
      range.addEventListener("input", () => (readout.textContent = range.value));
      wrap.append(range, readout);
      return { element: wrap, input: range };
    }
    if (kind === "number") {
      const number = document.createElement("input");
      number.type = "number";
      number.id = id;
      number.step = schema.type === "integer" ? 1 : "any";
      if (schema.default !== undefined && schema.default !== null) number.value = schema.default;
      number.placeholder = schema.type === "integer" ? "random / default" : "";
      return { element: number, input: number };
    }
    if (kind === "file" || kind === "files") {
      // Files travel inline as data: URIs (the form sends one JSON request, like the API's own examples).
      // "files" (an array of URIs, e.g. Kontext's input_images) takes several, in the order chosen.
      const wrap = document.createElement("div");
      const file = document.createElement("input");
      file.type = "file";
      file.id = id;
      file.accept = "image/*";
      file.multiple = kind === "files";
      const previews = document.createElement("div");
      previews.className = "previews";
      file.uris = [];
      file.addEventListener("change", async () => {
        file.uris = [];
        previews.replaceChildren();
        const chosen = Array.from(file.files || []);
        const read = (blob) =>
          new Promise((resolve, reject) => {
            const reader = new FileReader();
            reader.onload = () => resolve(reader.result);
            reader.onerror = () => reject(reader.error);
            reader.readAsDataURL(blob);
          });
        const uris = await Promise.all(chosen.map(read));
        file.uris = uris;
        for (const uri of uris) {
          const preview = document.createElement("img");
          preview.className = "preview";
          preview.alt = "";
          preview.src = uri;
          previews.append(preview);
        }
      });
      wrap.append(file, previews);
      return { element: wrap, input: file };
    }
    const text = document.createElement(name === "prompt" ? "textarea" : "input");
    if (name !== "prompt") text.type = "text";
    text.id = id;
    if (schema.default !== undefined && schema.default !== null) text.value = schema.default;
    if (required) text.required = true;
    return { element: text, input: text };
  }

  function buildForm() {
    const ref = part("model").value;
    const model = models.find((m) => `${m.owner}/${m.name}` === ref);
    const container = part("fields");
    container.replaceChildren();
    part("run-error").classList.add("hidden");
    if (!model || !model.latest_version) {
      part("run").disabled = true;
      return;
    }
    part("model-description").textContent = model.description || "";
    const components = model.latest_version.openapi_schema.components.schemas;
    const input = components.Input || { properties: {} };
    const required = new Set(input.required || []);
    const names = Object.keys(input.properties).sort(
      (a, b) => (input.properties[a]["x-order"] ?? 0) - (input.properties[b]["x-order"] ?? 0)
    );
    const fields = [];
    for (const name of names) {
      const schema = resolve(input.properties[name], components);
      const kind = fieldKind(schema);
      const { element, input: inputElement } = control(name, schema, kind, required.has(name));
      const field = document.createElement("div");
      field.className = "field" + (kind === "boolean" ? " checkbox" : "");
      field.dataset.field = name;
      const label = document.createElement("label");
      label.htmlFor = inputElement.id;
      if (kind === "boolean") label.append(element);
      label.append(schema.title || name.split("_").map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" "));
      if (required.has(name)) {
        const star = document.createElement("span");
        star.className = "required";
        star.textContent = "*";
        label.append(star);
      }
      field.append(label);
      if (kind !== "boolean") field.append(element);
      if (schema.description) {
        const help = document.createElement("p");
        help.className = "hint";
        help.textContent = schema.description;
        field.append(help);
      }
      container.append(field);
      fields.push({ name, kind, schema, input: inputElement });
    }
    current = { ref, fields };
    part("run").disabled = false;
    showModelState(model);
  }

  function collect() {
    const values = {};
    for (const { name, kind, schema, input } of current.fields) {
      if (kind === "boolean") values[name] = input.checked;
      else if (kind === "file") {
        if (input.uris.length) values[name] = input.uris[0];
      } else if (kind === "files") {
        if (input.uris.length) values[name] = input.uris;
      } else if (input.value === "") continue;
      else if (schema.type === "integer") values[name] = parseInt(input.value, 10);
      else if (schema.type === "number") values[name] = parseFloat(input.value);
      else values[name] = input.value;
    }
    return values;
  }

  part("run-form").addEventListener("reset", () => setTimeout(buildForm, 0));

  part("run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    const errorBox = part("run-error");
    errorBox.classList.add("hidden");
    part("run").disabled = true;
    try {
      const response = await fetch(`${api}/models/${current.ref}/predictions`, {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({ input: collect() }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
      await show(body.id);
      loadGallery();
    } catch (error) {
      errorBox.textContent = error.message;
      errorBox.classList.remove("hidden");
    } finally {
      part("run").disabled = false;
    }
  });

  // --- the prediction view and the gallery ----------------------------------------------------

  async function show(id) {
    const response = await fetch(`${pages}${encodeURIComponent(id)}/fragment`, { cache: "no-store" });
    if (!response.ok) throw new Error(`Could not load prediction ${id} (HTTP ${response.status})`);
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const view = template.content.firstElementChild;
    part("result").replaceChildren(view);
    watch.mount(view);
  }

  part("result").addEventListener("fluxserve:done", () => loadGallery());
  part("refresh").addEventListener("click", () => loadGallery());

  async function loadGallery() {
    if (!watch.getKey()) return;
    let page;
    try {
      page = await apiGet("/predictions");
    } catch (error) {
      showEmpty("error", [`Could not load the predictions: ${error.message}`]);
      return;
    }
    const tiles = page.results.slice(0, 24).map((p) => {
      const tile = document.createElement("a");
      tile.className = "tile";
      tile.href = p.urls.web;
      tile.dataset.prediction = p.id;
      const thumb = document.createElement("div");
      thumb.className = "thumb";
      const outputs = Array.isArray(p.output) ? p.output : p.output == null ? [] : [p.output];
      const image = outputs.find(watch.isImage);
      if (image) {
        const img = document.createElement("img");
        img.src = image;
        img.alt = "";
        img.loading = "lazy";
        thumb.append(img);
      } else {
        thumb.textContent = p.status === "succeeded" ? "no image" : p.status;
      }
      const meta = document.createElement("div");
      meta.className = "meta";
      const title = document.createElement("div");
      title.className = "title";
      title.textContent = (p.input && typeof p.input.prompt === "string" && p.input.prompt) || p.model;
      title.title = title.textContent;
      const badge = document.createElement("span");
      badge.className = "status status-" + p.status;
      badge.textContent = p.status;
      meta.append(title, badge);
      tile.append(thumb, meta);
      tile.addEventListener("click", (event) => {
        // A plain click shows the prediction here; a modified click opens its page as usual.
        if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
        event.preventDefault();
        show(p.id).catch(() => (location.href = p.urls.web));
      });
      return tile;
    });
    part("gallery").replaceChildren(...tiles);
    if (tiles.length) showEmpty("none");
    else showEmpty("empty", ["No predictions yet: run a model above and it appears here."]);
  }

  loadModels();
})();
