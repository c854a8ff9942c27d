// The batch page: submit questions to POST /v1/batches, follow the batch's Server-Sent
// Events and show each answer as it arrives, then the summary.
//
// Plain script, no build and no dependency, so the page works offline exactly as served.
// The events are read with fetch() and a small SSE parser rather than EventSource: an
// EventSource cannot send the Authorization header, and the API takes the key from it.
"use strict";

(function () {
  const KEY_STORAGE = "rag.apiKey";
  // Waits between reconnections of a dropped stream; the last one repeats.
  const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000];
  // Consecutive reconnections without a new event before the page gives up.
  const MAX_RECONNECTS_WITHOUT_PROGRESS = 8;

  const $ = (id) => document.getElementById(id);
  const form = $("batch-form");
  const keyInput = $("api-key");
  const questionsInput = $("questions");
  const runButton = $("run");
  const statusLine = $("batch-status");
  const alertBox = $("alert");
  const results = $("results");
  const summaryBox = $("summary");
  const rowTemplate = $("row-template");

  // --- readable errors ----------------------------------------------------------------------
  function seconds(value) {
    const n = Number(value);
    return Number.isFinite(n) && n > 0 ? Math.max(1, Math.ceil(n)) : null;
  }

  function retryText(retryAfter) {
    const s = seconds(retryAfter);
    return s === null ? "try again shortly" : `try again in ${s} s`;
  }

  // What a typed code means to someone reading the page; the server's own detail (which
  // names the offending value) follows it.
  function codeMessage(code, retryAfter) {
    switch (code) {
      case "unauthorized":
        return "The API key was not accepted";
      case "rate_limited":
        return `Rate limited: ${retryText(retryAfter)}`;
      case "circuit_open": {
        const s = seconds(retryAfter);
        return "The language model is paused after repeated failures; " +
          (s === null ? "retry shortly" : `retry in ${s} s`);
      }
      case "quota_exceeded":
        return `The tenant's token quota is used up: ${retryText(retryAfter)}`;
      case "llm_unavailable":
        return "The language model could not be reached";
      case "concurrency_timeout":
        return `The service is busy: ${retryText(retryAfter)}`;
      case "input_too_large":
        return "The request is too large";
      case "invalid_input":
      case "invalid_question":
        return "The request is not valid";
      case "not_found":
      case "unknown_tenant":
        return "Not found";
      case "no_documents":
        return "The tenant has no documents to answer from";
      case "database_unavailable":
      case "limits_unavailable":
      case "quota_unavailable":
        return `A service the API needs is unavailable: ${retryText(retryAfter)}`;
      default:
        return null;
    }
  }

  // The headline, then the server's detail unless it says the same thing already.
  function withDetail(head, detail) {
    if (!detail) return head;
    if (!head || detail.toLowerCase().includes(head.toLowerCase())) {
      return detail.charAt(0).toUpperCase() + detail.slice(1);
    }
    return `${head} — ${detail}`;
  }

  // One readable sentence for a problem+json body (RFC 9457) or any other failed response.
  function problemMessage(status, problem, retryAfterHeader) {
    const p = problem && typeof problem === "object" ? problem : {};
    const retry = p.retry_after_s ?? retryAfterHeader;
    let head = codeMessage(p.code, retry);
    if (head === null) {
      head = status === 401 ? "The API key was not accepted"
        : status === 429 ? `Rate limited: ${retryText(retry)}`
          : status === 503 ? `The service is unavailable: ${retryText(retry)}`
            : `The request failed (HTTP ${status}${p.title ? " " + p.title : ""})`;
    }
    const fieldPart = p.field ? ` — field ${p.field}` : "";
    return withDetail(head + fieldPart, p.detail);
  }

  async function readProblem(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null; // not JSON (a proxy's page): the status alone tells
    }
    return problemMessage(response.status, body, response.headers.get("Retry-After"));
  }

  function showAlert(message) {
    alertBox.textContent = message;
    alertBox.hidden = false;
  }

  function clearAlert() {
    alertBox.textContent = "";
    alertBox.hidden = true;
  }

  // --- the rows -----------------------------------------------------------------------------
  const rows = new Map(); // question id -> row element

  function field(row, name) {
    return row.querySelector(`[data-testid="${name}"]`);
  }

  function addRow(id, question) {
    const row = rowTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.questionId = id;
    row.dataset.status = "queued";
    field(row, "question-id").textContent = id;
    field(row, "question").textContent = question;
    results.appendChild(row);
    rows.set(id, row);
  }

  function setStatus(row, status) {
    row.dataset.status = status;
    const badge = field(row, "status");
    badge.textContent = status;
    badge.className = `status status-${status}`;
  }

  function showAnswer(data) {
    let row = rows.get(data.question_id);
    if (!row) { // an id the page did not send: show it all the same
      addRow(data.question_id, "");
      row = rows.get(data.question_id);
    }
    const failed = Boolean(data.error_code);
    setStatus(row, failed ? "error" : "answered");
    row.dataset.requestId = data.request_id || "";
    field(row, "answer").textContent = data.answer || "";
    const errorBox = field(row, "error");
    if (failed) {
      errorBox.textContent = withDetail(codeMessage(data.error_code, data.retry_after_s),
        data.error || data.error_code);
      errorBox.dataset.code = data.error_code;
      errorBox.hidden = false;
    }
    const citations = data.citations || [];
    const cited = new Set(citations);
    field(row, "citations").textContent = citations.length
      ? citations.map((c) => `chunk ${c}`).join(", ") : "none";
    field(row, "citations").dataset.chunks = citations.join(",");
    field(row, "prompt-tokens").textContent = String(data.prompt_tokens ?? 0);
    field(row, "completion-tokens").textContent = String(data.completion_tokens ?? 0);
    field(row, "cache-hit").textContent = data.cache_hit ? "yes" : "no";
    field(row, "model").textContent = data.model || "–";
    const list = field(row, "sources");
    list.replaceChildren();
    for (const source of data.sources || []) {
      const item = document.createElement("li");
      item.setAttribute("data-testid", "source");
      item.dataset.chunkId = String(source.chunk_id);
      item.dataset.documentId = String(source.document_id);
      item.dataset.score = String(source.score);
      if (cited.has(source.chunk_id)) item.classList.add("cited");
      const head = document.createElement("span");
      head.className = "source-head";
      head.textContent = `document ${source.document_id} · chunk ${source.chunk_id} · ` +
        `score ${Number(source.score).toFixed(3)}${cited.has(source.chunk_id) ? " · cited" : ""}`;
      const excerpt = document.createElement("span");
      excerpt.className = "excerpt";
      excerpt.setAttribute("data-testid", "excerpt");
      excerpt.textContent = source.excerpt;
      item.append(head, excerpt);
      list.appendChild(item);
    }
    field(row, "source-count").textContent = String((data.sources || []).length);
    row.querySelector(".sources-box").hidden = !(data.sources || []).length;
  }

  function showSummary(data) {
    const set = (name, value) => {
      summaryBox.querySelector(`[data-testid="${name}"]`).textContent = value;
    };
    set("summary-questions", String(data.questions ?? ""));
    set("summary-answered", String(data.answered ?? ""));
    set("summary-cache-hits", String(data.cache_hits ?? 0));
    const errors = Object.entries(data.errors || {});
    set("summary-errors", errors.length
      ? errors.map(([code, n]) => `${code}: ${n}`).join(", ") : "none");
    set("summary-prompt-tokens", String(data.prompt_tokens ?? 0));
    set("summary-completion-tokens", String(data.completion_tokens ?? 0));
    set("summary-wall", data.wall_s == null ? "–" : `${Number(data.wall_s).toFixed(2)} s`);
    summaryBox.hidden = false;
  }

  // --- Server-Sent Events over fetch() ------------------------------------------------------
  // Feeds text chunks in, calls onEvent({id, event, data}) per complete event. Lines end
  // with \n, \r\n or \r; a blank line ends an event; a line starting with ':' is a comment
  // (the server's keep-alive ping); the wire format is the WHATWG one.
  function sseParser(onEvent) {
    let buffer = "";
    let fields = { id: null, event: "", data: [] };
    function line(text) {
      if (text === "") {
        if (fields.data.length) {
          onEvent({ id: fields.id, event: fields.event || "message",
                    data: fields.data.join("\n") });
        }
        fields = { id: null, event: "", data: [] };
        return;
      }
      if (text.startsWith(":")) return;
      const colon = text.indexOf(":");
      const name = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") fields.data.push(value);
      else if (name === "event") fields.event = value;
      else if (name === "id") fields.id = value;
    }
    return function feed(chunk) {
      buffer += chunk;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        // A trailing \r may be the first half of \r\n: wait for the next chunk.
        if (!match || (match[0] === "\r" && match.index === buffer.length - 1)) return;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Follows the batch's events until the summary; reconnects with Last-Event-ID when the
  // stream drops before it, so no answer is shown twice or missed.
  async function followEvents(batchId, key) {
    let lastId = null;
    let done = false;
    let failures = 0;
    while (!done) {
      const headers = { Authorization: `Bearer ${key}`, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      let progressed = false;
      let waitMs = null;
      try {
        const response = await fetch(`../v1/batches/${encodeURIComponent(batchId)}/events`,
          { headers, cache: "no-store" });
        if (!response.ok) {
          const message = await readProblem(response);
          if (response.status !== 429 && response.status !== 503) {
            showAlert(message);
            return false;
          }
          showAlert(message); // a limit: wait as told, then try again
          waitMs = (seconds(response.headers.get("Retry-After")) || 1) * 1000;
        } else {
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          const feed = sseParser((event) => {
            if (event.id !== null) lastId = event.id;
            progressed = true;
            const data = JSON.parse(event.data);
            if (event.event === "answer") {
              showAnswer(data);
              statusLine.textContent = `Batch ${batchId}: ${countDone()} of ${rows.size} done`;
            } else if (event.event === "summary") {
              showSummary(data);
              done = true;
            }
          });
          while (!done) {
            const { value, done: ended } = await reader.read();
            if (ended) break;
            feed(value);
          }
          if (done) await reader.cancel().catch(() => {});
        }
      } catch (_) {
        // A dropped connection: reconnect below from the last event seen.
      }
      if (done) break;
      failures = progressed ? 0 : failures + 1;
      if (failures > MAX_RECONNECTS_WITHOUT_PROGRESS) {
        showAlert(`Lost the connection to the batch's events (batch ${batchId}); ` +
          "its answers are kept on the server: reload the page and try again later.");
        return false;
      }
      statusLine.textContent = `Batch ${batchId}: reconnecting…`;
      await sleep(waitMs ?? RECONNECT_DELAYS_MS[Math.min(failures,
        RECONNECT_DELAYS_MS.length - 1)]);
    }
    return true;
  }

  function countDone() {
    let n = 0;
    for (const row of rows.values()) if (row.dataset.status !== "queued") n += 1;
    return n;
  }

  // --- the form -----------------------------------------------------------------------------
  function parseQuestions(text) {
    return text.split(/\r\n|\r|\n/).map((q) => q.trim()).filter((q) => q.length > 0)
      .map((question, index) => ({ id: `q${index + 1}`, question }));
  }

  async function run(event) {
    event.preventDefault();
    clearAlert();
    const key = keyInput.value.trim();
    const questions = parseQuestions(questionsInput.value);
    if (!key) {
      showAlert("Enter an API key first.");
      keyInput.focus();
      return;
    }
    if (!questions.length) {
      showAlert("Enter at least one question (one per line).");
      questionsInput.focus();
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    runButton.disabled = true;
    results.replaceChildren();
    rows.clear();
    summaryBox.hidden = true;
    document.body.dataset.state = "running";
    statusLine.textContent = "Submitting…";
    try {
      let response;
      try {
        response = await fetch("../v1/batches", {
          method: "POST", cache: "no-store",
          headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json",
                     Accept: "application/json" },
          body: JSON.stringify({ questions }),
        });
      } catch (_) {
        showAlert("The API could not be reached.");
        statusLine.textContent = "";
        document.body.dataset.state = "failed";
        return;
      }
      if (response.status !== 202) {
        showAlert(await readProblem(response));
        statusLine.textContent = "";
        document.body.dataset.state = "failed";
        return;
      }
      const batch = await response.json();
      document.body.dataset.batchId = batch.batch_id;
      for (const q of questions) addRow(q.id, q.question);
      statusLine.textContent = `Batch ${batch.batch_id}: ${batch.status}`;
      const finished = await followEvents(batch.batch_id, key);
      statusLine.textContent = finished
        ? `Batch ${batch.batch_id}: done` : `Batch ${batch.batch_id}: not finished`;
      document.body.dataset.state = finished ? "done" : "failed";
    } finally {
      runButton.disabled = false;
    }
  }

  // The pure parts, for the browser test of the parser and the wording of each problem
  // (a breaker that is open cannot be arranged on a live server at will).
  window.ragBatchPage = Object.freeze({ sseParser, problemMessage, codeMessage });

  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  form.addEventListener("submit", run);
  document.body.dataset.state = "ready";
})();
