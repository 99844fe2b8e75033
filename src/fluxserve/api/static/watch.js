"use strict";
// Keeps a prediction view live. The view is rendered by the server (templates/_prediction.html);
// its SSE stream then feeds the status, progress bar, logs and outputs, and when the stream says
// "done" the final view (status, metrics) is fetched again from the server. Used by the prediction
// page and by the playground, which embeds the same view.
(function () {
  const KEY_STORAGE = "fluxserve.apiKey";
  // The tqdm line the official clients parse: "  40%|████      | 4/10 [00:01<00:02, 2.5it/s]".
  const PROGRESS = /^\s*(\d+)%\s*\|.+?\|\s*(\d+)\/(\d+)/gm;
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
  const IMAGE_PATH = /\.(webp|png|jpe?g|gif)(\?.*)?$/i;

  function getKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  function setKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      // Storage can be off (private mode): the key then lasts as long as the page.
    }
  }

  function lastProgress(logs) {
    let match;
    let last = null;
    PROGRESS.lastIndex = 0;
    while ((match = PROGRESS.exec(logs)) !== null) last = match;
    return last && { percent: Number(last[1]), current: Number(last[2]), total: Number(last[3]) };
  }

  function isImage(value) {
    if (typeof value !== "string") return false;
    if (value.startsWith("data:image/")) return true;
    return /^https?:\/\//.test(value) && IMAGE_PATH.test(value);
  }

  function outputElement(value) {
    if (isImage(value)) {
      const link = document.createElement("a");
      link.className = "output-image";
      link.href = value;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      const img = document.createElement("img");
      img.src = value;
      img.alt = "output";
      link.append(img);
      return link;
    }
    const pre = document.createElement("pre");
    pre.className = "output-text";
    pre.textContent = value;
    return pre;
  }

  function mount(root) {
    if (root.dataset.mounted) return;
    root.dataset.mounted = "1";
    const part = (role) => root.querySelector(`[data-role="${role}"]`);
    let status = root.dataset.status;
    let logs = part("logs").textContent;

    function setStatus(value) {
      status = value;
      root.dataset.status = value;
      const badge = part("status");
      badge.textContent = value;
      badge.className = "status status-" + value;
    }

    function showProgress() {
      const progress = lastProgress(logs);
      if (!progress) return;
      part("progress").classList.remove("hidden");
      part("progress-bar").value = progress.percent;
      part("progress-bar").textContent = progress.percent + "%";
      part("progress-text").textContent = `${progress.current}/${progress.total} steps · ${progress.percent}%`;
    }

    function showError(text) {
      const box = part("error");
      box.textContent = text;
      box.classList.remove("hidden");
    }

    setupCancel(root, part, setStatus);
    if (TERMINAL.has(status)) return;

    const source = new EventSource(root.dataset.stream);
    source.addEventListener("logs", (event) => {
      logs += event.data;
      const pre = part("logs");
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.textContent = logs;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      if (status === "starting") setStatus("processing");
      showProgress();
    });
    source.addEventListener("output", (event) => {
      part("outputs").append(outputElement(event.data));
    });
    source.addEventListener("error", (event) => {
      if (typeof event.data === "string") {
        // The prediction's own "error" event; "done" follows.
        let detail = event.data;
        try {
          detail = JSON.parse(event.data).detail || detail;
        } catch (e) {
          // Not JSON: show it as it is.
        }
        showError(detail);
      } else if (source.readyState === EventSource.CLOSED) {
        // A connection error the browser will not retry (it retries dropped connections itself).
        showError("Lost the connection to the server; reload the page to follow this prediction.");
      }
    });
    source.addEventListener("done", (event) => {
      source.close();
      let reason;
      try {
        reason = JSON.parse(event.data || "{}").reason;
      } catch (e) {
        reason = undefined;
      }
      setStatus(reason === "canceled" ? "canceled" : reason === "error" ? "failed" : "succeeded");
      refresh(root);
    });
  }

  async function refresh(root) {
    let html;
    try {
      const response = await fetch(root.dataset.fragment, { cache: "no-store" });
      if (!response.ok) return;
      html = await response.text();
    } catch (e) {
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (!fresh) return;
    root.replaceWith(fresh);
    mount(fresh);
    if (document.title.includes(" · ")) {
      document.title = document.title.replace(/ · [a-z]+ · /, ` · ${fresh.dataset.status} · `);
    }
    fresh.dispatchEvent(
      new CustomEvent("fluxserve:done", { bubbles: true, detail: { id: fresh.dataset.prediction } })
    );
  }

  function setupCancel(root, part, setStatus) {
    const form = part("cancel");
    if (!form) return;
    const keyInput = part("cancel-key");
    const message = part("cancel-message");
    const button = form.querySelector("button");
    if (getKey()) keyInput.classList.add("hidden");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const typed = keyInput.value.trim();
      if (typed) setKey(typed);
      const key = typed || getKey();
      if (!key) {
        keyInput.classList.remove("hidden");
        keyInput.focus();
        message.textContent = "Paste the API key that created this prediction.";
        return;
      }
      button.disabled = true;
      message.textContent = "Canceling…";
      let response;
      try {
        response = await fetch(root.dataset.cancel, {
          method: "POST",
          headers: { Authorization: "Bearer " + key },
        });
      } catch (e) {
        button.disabled = false;
        message.textContent = "Could not reach the server.";
        return;
      }
      if (response.ok) {
        const prediction = await response.json();
        message.textContent = "";
        if (TERMINAL.has(prediction.status)) setStatus(prediction.status);
        form.classList.add("hidden");
        return;
      }
      button.disabled = false;
      keyInput.classList.remove("hidden");
      if (response.status === 401 || response.status === 404) {
        message.textContent = "This key cannot cancel this prediction; paste the key that created it.";
      } else {
        const problem = await response.json().catch(() => ({}));
        message.textContent = problem.detail || `Cancel failed (HTTP ${response.status}).`;
      }
    });
  }

  window.fluxserve = { mount, getKey, setKey, isImage, lastProgress };
  document.querySelectorAll("[data-prediction]").forEach(mount);
})();
