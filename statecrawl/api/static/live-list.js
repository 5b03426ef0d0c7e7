/* statecrawl: the crawl list (/crawls), refreshed every 5 s from /crawls.json. */
"use strict";

(() => {
  const { el, fillTable, num, when, message, api, poll } = live;
  let polls = 0;

  function link(id) {
    return el("a", { text: id, href: `/crawls/${encodeURIComponent(id)}` });
  }

  async function tick() {
    const response = await api("/crawls.json");
    if (!response.ok) {
      message(`The API answered ${response.status}.`);
      return;
    }
    const body = await response.json();
    message(body.truncated ? "Only the first crawls are listed." : "");
    const rows = body.crawls;
    fillTable("crawls", rows, (r) => [
      ["", ""], [r.state, `state-cell ${r.state}`], [num(r.done), "n"], [num(r.failed), "n"],
      [num(r.queued), "n"], [num(r.in_flight), "n"], [num(r.workers), "n"], [when(r.created_at), ""],
      [r.job || "–", ""], [r.start_url || "", ""],
    ], "no crawls in this Redis");
    document.querySelectorAll("#crawls tbody tr").forEach((tr, i) => {
      if (rows[i]) tr.firstChild.replaceChildren(link(rows[i].crawl_id));
    });
    polls += 1;
    document.body.dataset.polls = String(polls);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  poll(tick, () => 5000);
})();
