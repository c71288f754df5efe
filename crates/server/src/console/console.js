// The operator console's script: the batch upload (drag and drop or the file input), the
// batch page's progress, and the health page's charts. Plain JavaScript, no dependencies.
"use strict";

const csrf = () => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
};

const FORMATS = { csv: "csv", jsonl: "jsonl", ndjson: "jsonl", json: "jsonl", xml: "pain.001", ach: "nacha", txt: "nacha" };
const TYPES = { csv: "text/csv", jsonl: "application/x-ndjson", "pain.001": "application/xml", nacha: "text/plain" };

function setupUpload() {
  const form = document.getElementById("upload");
  if (!form) return;
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const status = document.getElementById("upload-status");
  let dropped = null;
  ["dragenter", "dragover"].forEach((name) =>
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    }),
  );
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length > 0) {
      dropped = event.dataTransfer.files[0];
      input.required = false;
      status.textContent = "Ready: " + dropped.name;
    }
  });
  input.addEventListener("change", () => {
    dropped = null;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = dropped || (input.files && input.files[0]);
    if (!file) {
      status.textContent = "Choose a file first.";
      return;
    }
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    const format = document.getElementById("format").value || FORMATS[extension] || "csv";
    const query = new URLSearchParams({ format });
    const payer = document.getElementById("payer").value.trim();
    if (payer) query.set("payer", payer);
    query.set("on_invalid", document.getElementById("on_invalid").value);
    status.textContent = "Uploading " + file.name + "…";
    try {
      const response = await fetch("/console/batches?" + query.toString(), {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": TYPES[format] || "application/octet-stream",
          "X-CSRF-Token": csrf(),
          "Idempotency-Key": "console-upload-" + crypto.randomUUID(),
        },
        body: file,
      });
      const answer = await response.json().catch(() => null);
      if (response.ok && answer && answer.id) {
        window.location.assign("/console/batches/" + encodeURIComponent(answer.id));
      } else if (answer && answer.error) {
        status.textContent = "Refused (" + response.status + " " + answer.error.code + "): " + answer.error.message;
      } else {
        status.textContent = "Refused (" + response.status + "). Sign in again if your session ended.";
      }
    } catch (error) {
      status.textContent = "The upload failed: " + error;
    }
  });
}

function setupBatch() {
  const batch = document.getElementById("batch");
  if (!batch) return;
  const running = ["validating", "processing"];
  if (!running.includes(batch.dataset.status)) return;
  const id = batch.dataset.batch;
  const poll = async () => {
    try {
      const response = await fetch("/console/batches/" + encodeURIComponent(id) + "/status", { credentials: "same-origin" });
      const answer = await response.json();
      if (!response.ok) return;
      const counts = answer.counts || {};
      const total = counts.total || 0;
      const done = total - (counts.pending || 0);
      const progress = document.getElementById("progress");
      progress.max = Math.max(total, 1);
      progress.value = done;
      document.getElementById("progress-text").textContent = done + " of " + total;
      document.getElementById("batch-status").textContent = answer.status;
      for (const name of ["total", "succeeded", "failed", "invalid", "pending"]) {
        const cell = document.getElementById("count-" + name);
        if (cell) cell.textContent = counts[name] || 0;
      }
      if (!running.includes(answer.status)) {
        window.location.reload();
        return;
      }
    } catch (error) {
      // Try again at the next tick.
    }
    setTimeout(poll, 400);
  };
  setTimeout(poll, 200);
}

function draw(name, values) {
  const svg = document.getElementById("chart-" + name);
  if (!svg) return;
  const line = svg.querySelector("polyline");
  const high = Math.max(1, ...values);
  const step = values.length > 1 ? 300 / (values.length - 1) : 0;
  line.setAttribute("points", values.map((v, i) => (i * step).toFixed(1) + "," + (75 - (v / high) * 70).toFixed(1)).join(" "));
}

function setupHealth() {
  if (!document.getElementById("health")) return;
  const series = { batch: [], commit: [], queue: [], throughput: [] };
  let last = null;
  const keep = (name, value, shown) => {
    series[name].push(value);
    if (series[name].length > 60) series[name].shift();
    document.getElementById("now-" + name).textContent = shown;
    draw(name, series[name]);
  };
  const tick = async () => {
    try {
      const response = await fetch("/console/health/figures", { credentials: "same-origin" });
      const now = await response.json();
      if (response.ok) {
        if (last) {
          const events = now.paycore_engine_batch_events_sum - last.paycore_engine_batch_events_sum;
          const batches = now.paycore_engine_batch_events_count - last.paycore_engine_batch_events_count;
          const commitSeconds = now.paycore_engine_commit_seconds_sum - last.paycore_engine_commit_seconds_sum;
          const commits = now.paycore_engine_commit_seconds_count - last.paycore_engine_commit_seconds_count;
          const seconds = Math.max(0.001, (now.at_ms - last.at_ms) / 1000);
          const size = batches > 0 ? events / batches : 0;
          const latency = commits > 0 ? (commitSeconds / commits) * 1000 : 0;
          keep("batch", size, size.toFixed(1));
          keep("commit", latency, latency.toFixed(2) + " ms");
          keep("throughput", events / seconds, (events / seconds).toFixed(1) + " /s");
        }
        keep("queue", now.paycore_engine_queue_depth || 0, String(now.paycore_engine_queue_depth || 0));
        last = now;
      }
    } catch (error) {
      // Try again at the next tick.
    }
    setTimeout(tick, 2000);
  };
  tick();
}

// The payment list's first page follows new payments and status changes: the page is read
// again every three seconds and its list swapped in.
function setupPaymentList() {
  const list = document.getElementById("payment-list");
  if (!list || list.dataset.live !== "yes") return;
  const tick = async () => {
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (response.ok && response.headers.get("content-type").startsWith("text/html")) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("payment-list");
        if (fresh) list.innerHTML = fresh.innerHTML;
      }
    } catch (error) {
      // Try again at the next tick.
    }
    setTimeout(tick, 3000);
  };
  setTimeout(tick, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupPaymentList();
  setupUpload();
  setupBatch();
  setupHealth();
});
