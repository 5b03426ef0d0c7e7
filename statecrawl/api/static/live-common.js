/* statecrawl live pages: what both pages share. Everything read from the API is put in the
   page with textContent (never as HTML): host names, URLs and error messages are whatever
   the crawled sites and the crawl's workers wrote. */
"use strict";

const live = (() => {
  const KEY = "statecrawl.apiKey";
  let keyWaiters = [];

  /** An element with text content and attributes; children appended as they come. */
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    const o = opts || {};
    if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
    if (o.cls) node.className = o.cls;
    if (o.title) node.title = String(o.title);
    if (o.href) node.href = o.href;
    for (const child of children) node.appendChild(child);
    return node;
  }

  function setText(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = value === null || value === undefined ? "–" : String(value);
  }

  /** Replace the rows of table *id* with one <tr> per row; *cells(row)* gives [text, cls]s. */
  function fillTable(id, rows, cells, empty) {
    const body = document.querySelector(`#${id} tbody`);
    const cols = document.querySelectorAll(`#${id} thead th`).length || 2;
    const out = rows.map((row) => el("tr", null,
      ...cells(row).map(([text, cls]) => el("td", { text, cls }))));
    if (!out.length) {
      const td = el("td", { text: empty || "none", cls: "empty" });
      td.colSpan = cols;
      out.push(el("tr", null, td));
    }
    body.replaceChildren(...out);
  }

  function num(n, digits) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits ?? 0 });
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return `${num(s, s < 1 ? 2 : 1)} s`;
    if (s < 3600) return `${num(s / 60, 1)} min`;
    return `${num(s / 3600, 1)} h`;
  }

  function when(unix) {
    return unix ? new Date(unix * 1000).toLocaleString() : "–";
  }

  function message(text) {
    const node = document.getElementById("message");
    node.textContent = text || "";
    node.hidden = !text;
  }

  /** Show the key form; resolves once a key is entered. */
  function askKey(why) {
    const form = document.getElementById("key-form");
    document.getElementById("key-why").textContent = why;
    form.hidden = false;
    document.getElementById("key-input").focus();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  function setupKeyForm() {
    const form = document.getElementById("key-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("key-input");
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      input.value = "";
      form.hidden = true;
      const waiting = keyWaiters;
      keyWaiters = [];
      waiting.forEach((resolve) => resolve());
    });
  }

  /** fetch() with the API key (if any); a 401 asks for a key and tries again (3 times at most). */
  async function api(path, options) {
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      const key = sessionStorage.getItem(KEY);
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(path, { ...(options || {}), headers, cache: "no-store",
                                           credentials: "same-origin" });
      if (response.status !== 401 || attempt >= 2) return response;
      if (key) sessionStorage.removeItem(KEY);
      await askKey(key ? "The API refused that key; enter another." : "This API needs a key.");
    }
  }

  /** Call *tick* now and then every *every()* ms, one call at a time. */
  function poll(tick, every) {
    const run = async () => {
      try {
        await tick();
      } catch (err) {
        message(`Cannot reach the API: ${err && err.message ? err.message : err}`);
      }
      setTimeout(run, every());
    };
    run();
  }

  setupKeyForm();
  return { el, setText, fillTable, num, seconds, when, message, api, poll };
})();
