/* statecrawl: one crawl's live page (/crawls/{id}), refreshed every 2 s from /crawls/{id}/data.
   The chart is uPlot (MIT, vendored beside this file as uPlot.iife.min.js). */
"use strict";

(() => {
  const { el, setText, fillTable, num, seconds, when, message, api, poll } = live;
  const crawlId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
  const base = `/crawls/${encodeURIComponent(crawlId)}`;
  const ENDED = ["finished", "cancelled"];
  const CLASSES = ["2xx", "3xx", "4xx", "5xx", "other"];
  const chartBox = document.getElementById("chart");
  const cancelButton = document.getElementById("cancel");
  let chart = null;
  let state = null;
  let polls = 0;
  let armed = null;

  document.title = `statecrawl · ${crawlId}`;
  setText("crawl-id", crawlId);

  // -- the chart ---------------------------------------------------------------------------
  function drawChart(series, at) {
    // the newest bucket is still filling: its rate is over the seconds it has had so far
    const span = (b, i) => (i === series.length - 1 && at ? Math.min(10, Math.max(1, at - b.t)) : 10);
    const data = [series.map((b) => b.t), series.map((b, i) => b.pages / span(b, i)),
                  series.map((b, i) => b.errors / span(b, i))];
    chartBox.dataset.points = String(series.length);
    chartBox.dataset.pages = String(series.reduce((sum, b) => sum + b.pages, 0));
    if (chart) {
      chart.setData(data);
      return;
    }
    chart = new uPlot({
      width: Math.max(300, chartBox.clientWidth), height: 240,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.15)] } },
      series: [
        {},
        { label: "pages/s", stroke: "#1f9d55", fill: "rgba(31,157,85,0.12)", width: 2,
          points: { show: false }, value: (u, v) => (v === null ? "–" : num(v, 1)) },
        { label: "errors/s", stroke: "#cc3333", width: 1.5, points: { show: false },
          value: (u, v) => (v === null ? "–" : num(v, 1)) },
      ],
      axes: [{}, { size: 50 }],
    }, data, chartBox);
    window.addEventListener("resize", () => {
      chart.setSize({ width: Math.max(300, chartBox.clientWidth), height: 240 });
    });
  }

  // -- the sections ------------------------------------------------------------------------
  function drawMix(minute) {
    const counts = CLASSES.map((c) => [c, minute.status[c] || 0]);
    const total = counts.reduce((sum, [, n]) => sum + n, 0);
    const bar = document.getElementById("mix");
    bar.replaceChildren(...counts.filter(([, n]) => n > 0).map(([c, n]) => {
      const seg = el("span", { cls: `s-${c}`, title: `${c}: ${n}` });
      seg.style.width = `${(100 * n) / total}%`;
      return seg;
    }));
    const body = document.querySelector("#mix-table tbody");
    body.replaceChildren(...counts.map(([c, n]) => el("tr", null,
      el("td", null, el("span", { cls: `swatch s-${c}` }), el("span", { text: c })),
      el("td", { text: num(n), cls: "n" }),
      el("td", { text: total ? `${num((100 * n) / total, 1)} %` : "–", cls: "n" }))));
    setText("latency", latencyText(minute.latency));
  }

  function latencyText(histogram) {
    const rows = Object.entries(histogram || {}).map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), n])
      .sort((a, b) => a[0] - b[0]);
    const total = rows.reduce((sum, [, n]) => sum + n, 0);
    if (!total) return "no fetches in the last minute";
    const at = (q) => {
      let seen = 0;
      for (const [le, n] of rows) {
        seen += n;
        if (seen >= q * total) return le === Infinity ? "> 10 s" : `≤ ${le} s`;
      }
      return "–";
    };
    return `fetch latency: p50 ${at(0.5)}, p95 ${at(0.95)} (${num(total)} fetches)`;
  }

  function drawErrors(minute) {
    const rows = [
      ...Object.entries(minute.errors || {}).map(([name, n]) => [name, n]),
      ...Object.entries(minute.callback_errors || {}).map(([name, n]) => [`callback: ${name}`, n]),
    ].sort((a, b) => b[1] - a[1]);
    fillTable("error-classes", rows, ([name, n]) => [[name, ""], [num(n), "n"]], "no errors");
  }

  function drawWorkers(snap) {
    fillTable("workers", snap.workers, (w) => [
      [w.id, ""], [w.host ?? "–", ""], [w.pid ?? "–", "n"], [seconds(w.heartbeat_age), "n"],
      [num(w.leases), "n"], [seconds(w.oldest_lease_s), "n"],
    ], "no live worker");
    const l = snap.leases;
    setText("leases", `leases in flight ${num(l.in_flight)} · oldest ${seconds(l.oldest_age)} · `
      + `reclaimed so far ${num(l.reclaimed)}`);
  }

  function hostDelay(row, budget) {
    const sources = Object.entries(row.delay || {});
    if (!sources.length) return budget.polite ? seconds(budget.delay) : "–";
    const [src, value] = sources.sort((a, b) => b[1] - a[1])[0];
    return `${seconds(value)} (${src})`;
  }

  function drawHosts(snap) {
    const b = snap.politeness;
    setText("budget", b.polite
      ? `polite crawl: delay ${seconds(b.delay)}, concurrency ${b.concurrency || "no cap"} per host`
        + `${b.autothrottle ? ", AutoThrottle on" : ""}; ${num(b.hosts)} hosts, the top by backlog`
      : "not polite: no budget per host; the busiest hosts of the last minute");
    fillTable("hosts", snap.hosts, (h) => [
      [h.host, ""], [h.queued === undefined ? "–" : num(h.queued), "n"],
      [h.in_flight === undefined ? "–" : num(h.in_flight), "n"], [num(h.rate, 2), "n"],
      [num(h.fetches_1m), "n"], [num(h.errors_1m), "n"], [hostDelay(h, b), "n"],
      [h.concurrency ?? (b.polite && b.concurrency ? b.concurrency : "–"), "n"],
      [h.backoff === undefined ? "–" : num(h.backoff), "n"],
      [h.next_in === undefined ? "–" : seconds(h.next_in), "n"],
    ], "no host yet");
  }

  function drawDead(snap) {
    fillTable("dead", snap.dead_letters, (d) => [
      [when(d.at), ""], [d.kind ?? "", ""], [d.ref ?? "", ""], [d.error ?? "", ""], [d.worker ?? "", ""],
    ], "no dead letters");
  }

  function drawCounters(snap) {
    for (const name of ["queued", "in_flight", "done", "failed", "seen"]) setText(`c-${name}`, num(snap[name]));
    setText("c-workers", num(snap.workers.length));
    for (const span of ["1m", "5m", "15m"]) setText(`r-${span}`, num(snap.rates.pages_per_s[span], 2));
    const row = document.getElementById("progress-row");
    row.hidden = snap.progress === null || snap.progress === undefined;
    if (!row.hidden) {
      document.getElementById("progress").value = snap.progress;
      setText("progress-text", `${num(100 * snap.progress, 1)} % of the limit of ${num(snap.limit)} requests · ${num(snap.done)} pages done`);
    }
  }

  function drawHeader(snap) {
    state = snap.state;
    const badge = document.getElementById("state");
    badge.textContent = snap.shown_state;
    badge.className = `state ${snap.shown_state}`;
    const parts = [`spider ${snap.spider || "–"}`, `start ${snap.start_url || "–"}`,
                   `created ${when(snap.created_at)}`];
    if (snap.finished_at) parts.push(`finished ${when(snap.finished_at)}`);
    if (snap.limit) parts.push(`limit ${num(snap.limit)}`);
    if (snap.job) parts.push(`API crawl job: ${snap.job.status}`);
    setText("about", parts.join(" · "));
    if (armed === null) cancelButton.disabled = ENDED.includes(state);
    const d = snap.dupefilter;
    const r = snap.redis;
    setText("footer", `dupefilter ${d.mode}: ${num(d.entries)} entries`
      + `${d.bloom_fill !== null ? `, ${num(100 * d.bloom_fill, 2)} % full` : ""} · Redis `
      + `${num(r.used_memory / 1048576, 1)} MiB used, ping ${num(r.ping_ms, 2)} ms, scripts `
      + `${r.script_usec_per_call === null ? "–" : num(r.script_usec_per_call, 1)} µs/call`);
  }

  // -- polling and cancel ------------------------------------------------------------------
  async function tick() {
    const response = await api(`${base}/data`);
    if (response.status === 404) {
      message(`No crawl ${crawlId} in this Redis (unknown, or purged).`);
      cancelButton.disabled = true;
      return;
    }
    if (!response.ok) {
      message(`The API answered ${response.status}${response.status === 429 ? " (rate limit)" : ""}.`);
      return;
    }
    const snap = (await response.json()).crawl;
    drawHeader(snap);
    drawCounters(snap);
    drawChart(snap.series, snap.at);
    drawMix(snap.last_minute);
    drawErrors(snap.last_minute);
    drawWorkers(snap);
    drawHosts(snap);
    drawDead(snap);
    polls += 1;
    document.body.dataset.polls = String(polls);
    document.body.dataset.state = snap.state;
    setText("updated", `updated ${new Date((snap.at || Date.now() / 1000) * 1000).toLocaleTimeString()}`);
    if (!document.getElementById("message").dataset.sticky) message("");
  }

  async function cancel() {
    if (armed === null) {  // the first click arms the button for 5 s; the second cancels
      cancelButton.textContent = "Click again to cancel";
      cancelButton.classList.add("armed");
      armed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    cancelButton.disabled = true;
    const response = await api(`${base}/cancel`, { method: "POST" });
    const body = await response.json().catch(() => ({}));
    const text = response.ok ? "Cancelled: the crawl's workers stop after their current requests."
      : `Not cancelled: ${body.error || `the API answered ${response.status}`}.`;
    const node = document.getElementById("message");
    node.dataset.sticky = "1";
    message(text);
    if (!response.ok && !ENDED.includes(state)) cancelButton.disabled = false;
  }

  function disarm() {
    clearTimeout(armed);
    armed = null;
    cancelButton.textContent = "Cancel crawl";
    cancelButton.classList.remove("armed");
  }

  cancelButton.addEventListener("click", () => { cancel().catch((err) => message(String(err))); });
  poll(tick, () => (ENDED.includes(state) ? 10000 : 2000));
})();
