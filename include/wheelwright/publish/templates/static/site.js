/* The few things the static pages do in the browser, all against files of the same tree:
   - commands a Pi user copies get this site's own origin when the publisher was not told its URL;
   - the search page and the 404 page read the sharded search index under search/ (see
     wheelwright.publish.site: one small file per word prefix, split further while too big);
   - a project page asks queue.json where its queued releases stand.
   No outside requests, no cookies, nothing stored. */
(function () {
  "use strict";
  const body = document.body;
  const root = body.dataset.root || "";

  // --- commands: the index's URL (the publisher's SITE_PLACEHOLDER when it was not told it) ----------
  for (const element of document.querySelectorAll("[data-origin]")) {
    const code = element.querySelector("code") || element;
    code.textContent = code.textContent.split("https://this.index").join(location.origin);
  }

  // --- names ---------------------------------------------------------------------------------------
  function canonical(text) {
    return text.toLowerCase().trim().replace(/[-_.\s]+/g, "-").replace(/^-+|-+$/g, "");
  }
  function tokens(name) {
    return name.split("-").filter(t => t);
  }
  function shardKey(token) {
    return token.length < 2 ? token : token.slice(0, 2);
  }

  // --- the sharded search index --------------------------------------------------------------------
  const shards = new Map();
  function fetchShard(key) {
    if (!/^[a-z0-9]+$/.test(key)) return Promise.resolve(null);
    if (!shards.has(key)) {
      shards.set(key, fetch(root + "search/" + key + ".json")
        .then(r => (r.ok ? r.json() : null))
        .catch(() => null));
    }
    return shards.get(key);
  }
  // The entries of the deepest shard for `token`: names with a word starting with it.
  async function entriesFor(token) {
    let key = shardKey(token);
    let shard = await fetchShard(key);
    while (shard && shard.split && token.length > key.length) {
      key = token.slice(0, key.length + 1);
      const next = await fetchShard(key);
      if (!next) return {entries: [], truncated: false};
      shard = next;
    }
    if (!shard) return {entries: [], truncated: false};
    return {entries: shard.entries, truncated: !!(shard.split || shard.truncated)};
  }
  function matches(entry, queryTokens) {
    const words = tokens(entry[0]);
    return queryTokens.every(q => words.some(w => w.startsWith(q)));
  }
  async function search(text, limit) {
    const query = canonical(text);
    const queryTokens = tokens(query);
    if (!queryTokens.length) return {query, found: [], total: 0, truncated: false};
    // Candidates come from the shards of the query's words (a one-letter word's shard holds only that
    // word, so it serves only a one-letter query). The smallest complete shard holds every match; when
    // each is cut (a crowded word like "python"), their union is the best there is.
    const words = [...new Set(queryTokens)].sort((a, b) => b.length - a.length);
    const asked = (words[0].length > 1 ? words.filter(w => w.length > 1) : words).slice(0, 3);
    const lists = await Promise.all(asked.map(entriesFor));
    const complete = lists.filter(l => !l.truncated);
    const chosen = complete.length
      ? [complete.reduce((a, b) => (a.entries.length <= b.entries.length ? a : b))] : lists;
    const truncated = !complete.length;
    const candidates = new Map();
    for (const list of chosen) for (const e of list.entries) candidates.set(e[0], e);
    const found = [...candidates.values()].filter(e => matches(e, queryTokens));
    found.sort((a, b) => (b[0] === query) - (a[0] === query)
      || b[0].startsWith(query) - a[0].startsWith(query)
      || b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return {query, found: found.slice(0, limit), total: found.length, truncated};
  }
  function resultItem(entry) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = root + "project/" + entry[0] + "/";
    a.textContent = entry[2] || entry[0];
    li.appendChild(a);
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = entry[1].toLocaleString("en") + " downloads / 30 days";
    li.appendChild(n);
    return li;
  }

  // --- the search page ------------------------------------------------------------------------------
  if (body.dataset.page === "search") {
    const input = document.getElementById("q");
    const list = document.getElementById("results");
    const status = document.getElementById("status");
    let asked = 0;
    async function run() {
      const mine = ++asked;
      const text = input.value;
      if (!canonical(text)) {
        list.replaceChildren();
        status.textContent = "Type a name, or the start of a word of one.";
        return;
      }
      status.textContent = "Searching…";
      const started = performance.now();
      const result = await search(text, 50);
      if (mine !== asked) return;   // a later keystroke won
      list.replaceChildren(...result.found.map(resultItem));
      const took = Math.round(performance.now() - started);
      status.textContent = result.found.length
        ? `${result.truncated ? "more than " : ""}${result.total.toLocaleString("en")} found` +
          (result.total > result.found.length ? `, the ${result.found.length} most downloaded shown` : "") +
          ` (${took} ms)`
        : `Nothing found for “${text}”.`;
      status.dataset.done = String(mine);
      const url = new URL(location.href);
      url.searchParams.set("q", text);
      history.replaceState(null, "", url);
    }
    input.addEventListener("input", run);
    const given = new URLSearchParams(location.search).get("q");
    if (given) input.value = given;
    run();
    window.wheelwrightSearch = search;   // the benchmark drives the same function
  }

  // --- the 404 page: the closest names ------------------------------------------------------------
  function distance(a, b) {
    const row = Array.from({length: b.length + 1}, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0];
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const here = row[j];
        row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = here;
      }
    }
    return row[b.length];
  }
  async function closest(name, limit) {
    const keys = new Set(tokens(name).map(shardKey));
    const seen = new Map();
    for (const key of keys) {
      const {entries} = await entriesFor(key);
      for (const e of entries) seen.set(e[0], e);
    }
    const scored = [...seen.values()].map(e => [distance(name, e[0]), e])
      .filter(([d, e]) => d <= Math.max(2, Math.floor(name.length / 3)) || e[0].includes(name));
    scored.sort((a, b) => a[0] - b[0] || b[1][1] - a[1][1]);
    return scored.slice(0, limit).map(([, e]) => e);
  }
  if (body.dataset.page === "notfound") {
    const match = location.pathname.match(/\/(?:project|simple)\/([^/]+)/);
    let asked = "";
    try {
      asked = match ? decodeURIComponent(match[1]) : "";
    } catch (e) {   // a malformed %-escape: nothing to suggest from
      asked = "";
    }
    const name = canonical(asked);
    const list = document.getElementById("closest");
    const status = document.getElementById("status");
    const input = document.getElementById("q");
    if (input && asked) input.value = asked;
    document.getElementById("asked").textContent = asked || location.pathname;
    if (name) {
      closest(name, 8).then(found => {
        list.replaceChildren(...found.map(resultItem));
        status.textContent = found.length ? "Did you mean:" : "No package with a name close to it.";
        status.dataset.done = "1";
      });
    } else {
      status.dataset.done = "1";
    }
  }

  // --- a project page: where its queued releases stand ------------------------------------------
  function hours(seconds) {
    if (seconds < 90 * 60) return `about ${Math.max(1, Math.round(seconds / 60))} min`;
    if (seconds < 48 * 3600) return `about ${Math.round(seconds / 3600)} h`;
    return `about ${Math.round(seconds / 86400)} days`;
  }
  const queued = document.querySelectorAll("tr[data-queue]");
  if (body.dataset.page === "project" && queued.length) {
    const project = document.querySelector(".project");
    const pkg = project && project.dataset.package;
    fetch(root + "queue.json").then(r => (r.ok ? r.json() : null)).then(queue => {
      if (!queue) return;
      for (const row of queued) {
        const release = row.closest("[data-version]");
        const target = queue.targets[row.dataset.queue];
        const cell = row.querySelector(".position");
        if (!target || !release || !cell) continue;
        const at = target.head.findIndex(([p, v]) => p === pkg && v === release.dataset.version);
        const rate = target.paused ? 0 : target.per_hour;
        const paused = target.paused ? " (an operator paused this target)" : "";
        if (at >= 0) {
          const position = at + 1;
          cell.textContent = ` · position ${position.toLocaleString("en")}` +
            (target.length ? ` of ${target.length.toLocaleString("en")}` : "") +
            (rate > 0 ? `, ${hours(position / rate * 3600)}` : paused || ", no builds lately to estimate from");
        } else {
          cell.textContent = ` · behind the first ${target.head.length.toLocaleString("en")}` +
            (target.length && rate > 0 ? `, within ${hours(target.length / rate * 3600)}` : paused);
        }
      }
    }).catch(() => {});
  }
})();
