// flowlog map: details on hover and click, filters, search, pan and zoom.
// The SVG is drawn by flowlog; this only reads the embedded details and
// toggles classes. Names from the flow log are set as text, never as markup.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("flowmap-data").textContent);
  const svg = document.getElementById("map");
  const canvas = document.getElementById("canvas");
  const details = document.getElementById("details");
  const tooltip = document.getElementById("tooltip");
  const controls = {
    search: document.getElementById("search"),
    namespace: document.getElementById("namespace"),
    verdict: document.getElementById("verdict"),
    port: document.getElementById("port"),
  };
  const nodeElements = new Map();
  const edgeElements = new Map();
  const edgesOf = new Map();
  svg.querySelectorAll(".node").forEach((g) => {
    nodeElements.set(g.dataset.node, g);
    edgesOf.set(g.dataset.node, []);
  });
  svg.querySelectorAll(".edge").forEach((g) => {
    // A wide, invisible copy of the line on top of it is what the pointer finds.
    const hit = g.querySelector(".line").cloneNode(false);
    hit.setAttribute("class", "hit");
    hit.removeAttribute("marker-end");
    hit.removeAttribute("stroke-width");
    g.append(hit);
    edgeElements.set(g.dataset.edge, g);
    edgesOf.get(g.dataset.source).push(g.dataset.edge);
    if (g.dataset.target !== g.dataset.source) edgesOf.get(g.dataset.target).push(g.dataset.edge);
  });
  let selected = null; // {kind: "node"|"edge", id}

  // --- words ---------------------------------------------------------------
  const number = (n) => n.toLocaleString("en-US");
  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = n;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
  }
  function element(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (className) e.className = className;
    return e;
  }
  function list(pairs) {
    const dl = element("dl");
    for (const [term, value] of pairs) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(element("dt", term));
      const dd = element("dd");
      if (value instanceof Node) dd.append(value);
      else dd.textContent = value;
      dl.append(dd);
    }
    return dl;
  }
  function nodeName(id) {
    return data.nodes[id] ? data.nodes[id].name : id;
  }
  function flowWords(flows, denied) {
    return number(flows) + (flows === 1 ? " flow" : " flows") + (denied ? ", " + number(denied) + " denied" : "");
  }
  function policyLine(policy) {
    const [verdict, reason, direction, count] = policy;
    const where = direction ? " at " + direction : "";
    const word = verdict === "DENY" ? "denied" : "allowed";
    return word + where + ": " + reason + " (" + number(count) + ")";
  }

  // --- details -----------------------------------------------------------------
  function edgeDetails(id) {
    const edge = data.edges[id];
    const box = document.createDocumentFragment();
    const heading = element("h3", nodeName(edge.source));
    heading.append(document.createElement("br"), "→ " + nodeName(edge.target));
    box.append(heading);
    const pairs = [
      ["port", edge.service],
      ["verdict", edge.status + (edge.latest ? " (the latest " + edge.latest + ")" : "")],
      ["flows", number(edge.flows)],
      ["allowed", number(edge.allowed)],
      ["denied", number(edge.denied)],
    ];
    if (edge.sizes) {
      pairs.push(["sent", number(edge.sizes[0]) + " packets, " + bytes(edge.sizes[1])]);
      pairs.push(["received", number(edge.sizes[2]) + " packets, " + bytes(edge.sizes[3])]);
    }
    pairs.push(["first seen", edge.firstSeen], ["last seen", edge.lastSeen]);
    pairs.push(["last allowed", edge.lastAllowed], ["last denied", edge.lastDenied]);
    box.append(list(pairs));
    if (edge.policies.length) {
      box.append(element("strong", "Policies"));
      const ul = element("ul");
      for (const policy of edge.policies) {
        ul.append(element("li", policyLine(policy), policy[0] === "DENY" ? "deny" : ""));
      }
      box.append(ul);
    }
    return box;
  }
  function nodeDetails(id) {
    const node = data.nodes[id];
    const box = document.createDocumentFragment();
    box.append(element("h3", node.name));
    const more = (shown, count) => shown.join(", ") + (count > shown.length ? " and " + number(count - shown.length) + " more" : "");
    box.append(
      list([
        ["kind", node.kind],
        ["namespace", node.namespace],
        ["workload", node.workload ? node.workload + (node.workloadGuessed ? " (from the pod's name)" : "") : ""],
        ["pods", node.kind !== "pod" && node.podCount ? more(node.pods, node.podCount) : ""],
        ["addresses", node.addressCount ? more(node.addresses, node.addressCount) : ""],
        ["on node", node.hosts.join(", ")],
        ["out", flowWords(node.out[0], node.out[1]) + " on " + number(node.out[2]) + " edges"],
        ["ports called", node.out[3].join(", ")],
        ["in", flowWords(node.in[0], node.in[1]) + " on " + number(node.in[2]) + " edges"],
        ["ports served", node.in[3].join(", ")],
        ["first seen", node.firstSeen],
        ["last seen", node.lastSeen],
      ])
    );
    const ids = edgesOf.get(id) || [];
    if (ids.length) {
      box.append(element("strong", "Edges"));
      const ul = element("ul");
      for (const edgeId of ids.slice(0, 60)) {
        const edge = data.edges[edgeId];
        const other = edge.source === id ? "→ " + nodeName(edge.target) : "← " + nodeName(edge.source);
        const link = element("a", other + " " + edge.service + ": " + flowWords(edge.flows, edge.denied));
        link.addEventListener("click", () => select({ kind: "edge", id: edgeId }));
        const item = element("li", null, edge.denied ? "deny" : "");
        item.append(link);
        ul.append(item);
      }
      if (ids.length > 60) ul.append(element("li", "and " + number(ids.length - 60) + " more"));
      box.append(ul);
    }
    return box;
  }
  function summary(kind, id) {
    const fragment = document.createDocumentFragment();
    if (kind === "edge") {
      const edge = data.edges[id];
      fragment.append(element("b", nodeName(edge.source) + " → " + nodeName(edge.target) + " " + edge.service));
      const latest = edge.latest ? "; the latest " + edge.latest : "";
      fragment.append(element("div", edge.status + ": " + flowWords(edge.flows, edge.denied) + latest));
      for (const policy of edge.policies.filter((p) => p[0] === "DENY").slice(0, 3)) {
        fragment.append(element("div", policyLine(policy)));
      }
      if (edge.sizes) fragment.append(element("div", bytes(edge.sizes[1]) + " sent, " + bytes(edge.sizes[3]) + " received"));
      fragment.append(element("div", edge.firstSeen + " – " + edge.lastSeen));
    } else {
      const node = data.nodes[id];
      fragment.append(element("b", node.name));
      fragment.append(element("div", "out: " + flowWords(node.out[0], node.out[1])));
      fragment.append(element("div", "in: " + flowWords(node.in[0], node.in[1])));
    }
    return fragment;
  }

  // --- selection and tooltip -----------------------------------------------------
  function select(target) {
    selected = target;
    svg.querySelectorAll(".selected").forEach((e) => e.classList.remove("selected"));
    details.replaceChildren();
    if (!target) {
      details.append(element("p", "Hover over or click a box or an arrow for its details.", "hint"));
    } else if (target.kind === "edge") {
      edgeElements.get(target.id).classList.add("selected");
      details.append(edgeDetails(target.id));
    } else {
      nodeElements.get(target.id).classList.add("selected");
      details.append(nodeDetails(target.id));
    }
    apply();
  }
  function targetOf(event) {
    const edge = event.target.closest(".edge");
    if (edge) return { kind: "edge", id: edge.dataset.edge };
    const node = event.target.closest(".node");
    if (node) return { kind: "node", id: node.dataset.node };
    return null;
  }
  svg.addEventListener("mousemove", (event) => {
    const target = targetOf(event);
    if (!target || panning) {
      tooltip.hidden = true;
      return;
    }
    tooltip.replaceChildren(summary(target.kind, target.id));
    tooltip.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    const y = Math.min(event.clientY + 14, window.innerHeight - tooltip.offsetHeight - 8);
    tooltip.style.left = x + "px";
    tooltip.style.top = y + "px";
  });
  svg.addEventListener("mouseleave", () => (tooltip.hidden = true));
  svg.addEventListener("click", (event) => {
    if (moved) return;
    select(targetOf(event));
  });
  svg.addEventListener("keydown", (event) => {
    const node = event.target.closest && event.target.closest(".node");
    if (node && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      select({ kind: "node", id: node.dataset.node });
    }
  });
  document.querySelectorAll("#denied tbody tr").forEach((row) => {
    row.addEventListener("click", () => {
      select({ kind: "edge", id: row.dataset.edge });
      canvas.scrollIntoView({ behavior: "smooth", block: "nearest" });
    });
  });

  // --- filters and search --------------------------------------------------------------
  function edgeShown(id) {
    const edge = data.edges[id];
    const g = edgeElements.get(id);
    const namespace = controls.namespace.value;
    if (namespace && !g.dataset.namespaces.split(" ").includes(namespace)) return false;
    if (controls.verdict.value === "denied" && !edge.denied) return false;
    if (controls.verdict.value === "allowed" && !edge.allowed) return false;
    if (controls.port.value && edge.service !== controls.port.value) return false;
    return true;
  }
  function apply() {
    const query = controls.search.value.trim().toLowerCase();
    const matches = new Set();
    if (query) {
      nodeElements.forEach((g, id) => {
        if (g.dataset.search.includes(query)) matches.add(id);
      });
    }
    // With a box selected (or a search), only what touches it stays bright.
    const focus = selected && selected.kind === "node" ? new Set([selected.id]) : matches;
    const visibleNodes = new Set();
    let shown = 0;
    edgeElements.forEach((g, id) => {
      const edge = data.edges[id];
      const visible = edgeShown(id);
      g.classList.toggle("hidden", !visible);
      const touches = focus.has(edge.source) || focus.has(edge.target);
      g.classList.toggle("dimmed", visible && focus.size > 0 && !touches);
      if (visible) {
        shown += 1;
        if (!focus.size || touches) {
          visibleNodes.add(edge.source);
          visibleNodes.add(edge.target);
        }
      }
    });
    const filtering = controls.namespace.value || controls.verdict.value || controls.port.value;
    nodeElements.forEach((g, id) => {
      g.classList.toggle("match", matches.has(id));
      const bright = visibleNodes.has(id) || focus.has(id) || (!filtering && !focus.size);
      g.classList.toggle("dimmed", !bright);
    });
    const words = [number(shown) + " of " + number(edgeElements.size) + " edges shown"];
    if (query) words.push(number(matches.size) + " boxes match “" + controls.search.value.trim() + "”");
    document.getElementById("shown").textContent = words.join(", ");
  }
  for (const control of Object.values(controls)) control.addEventListener("input", apply);
  document.getElementById("reset").addEventListener("click", () => {
    controls.search.value = controls.namespace.value = controls.verdict.value = controls.port.value = "";
    select(null);
    fit();
  });

  // --- pan and zoom ------------------------------------------------------------------------
  const full = { width: Number(svg.dataset.width), height: Number(svg.dataset.height) };
  let view = { x: 0, y: 0, width: full.width, height: full.height };
  let panning = null;
  let moved = false;
  function show() {
    svg.setAttribute("viewBox", [view.x, view.y, view.width, view.height].map((v) => v.toFixed(1)).join(" "));
  }
  function fit() {
    view = { x: 0, y: 0, width: full.width, height: full.height };
    show();
  }
  function pointAt(event) {
    const rect = svg.getBoundingClientRect();
    // The picture keeps its aspect ratio inside the element (xMidYMid meet).
    const scale = Math.max(view.width / rect.width, view.height / rect.height);
    const offsetX = (rect.width * scale - view.width) / 2;
    const offsetY = (rect.height * scale - view.height) / 2;
    return {
      x: view.x - offsetX + (event.clientX - rect.left) * scale,
      y: view.y - offsetY + (event.clientY - rect.top) * scale,
      scale,
    };
  }
  svg.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const point = pointAt(event);
      const factor = Math.exp(Math.sign(event.deltaY) * 0.15);
      const width = Math.min(full.width * 4, Math.max(80, view.width * factor));
      const ratio = width / view.width;
      view = {
        x: point.x - (point.x - view.x) * ratio,
        y: point.y - (point.y - view.y) * ratio,
        width,
        height: view.height * ratio,
      };
      show();
    },
    { passive: false }
  );
  svg.addEventListener("mousedown", (event) => {
    if (event.button !== 0) return;
    panning = { x: event.clientX, y: event.clientY, view: { ...view }, scale: pointAt(event).scale };
    moved = false;
  });
  window.addEventListener("mousemove", (event) => {
    if (!panning) return;
    const dx = event.clientX - panning.x;
    const dy = event.clientY - panning.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) {
      moved = true;
      canvas.classList.add("panning");
    }
    view = { ...panning.view, x: panning.view.x - dx * panning.scale, y: panning.view.y - dy * panning.scale };
    show();
  });
  window.addEventListener("mouseup", () => {
    panning = null;
    canvas.classList.remove("panning");
    setTimeout(() => (moved = false), 0);
  });
  document.getElementById("fit").addEventListener("click", fit);

  apply();
})();
