// The status page's HTML, CSS and script: one file, no external assets
// (operators open it on an isolated network). The script builds every
// element with DOM calls (textContent, never innerHTML), since node and
// model names come from configs and devices.
#include <string>

#include "controller/status_page.h"

namespace edgesplit {

const std::string& ControllerStatusHtml() {
  static const std::string* const kPage = new std::string(R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>edgesplit controller</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; }
  th, td { padding: .25em .7em; border-bottom: 1px solid #ddd;
           text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { font-weight: 600; }
  .alive { color: #1a7f37; } .suspected { color: #b35900; }
  .down { color: #c62828; } .unregistered { color: #777; }
  #meta { color: #666; } #error { color: #c62828; font-weight: 600; }
  svg.plan { display: block; margin: .3em 0 1em; }
  svg text { font: 12px system-ui, sans-serif; }
</style>
</head>
<body>
<h1>edgesplit controller</h1>
<div id="meta">plan version <span id="version">?</span>,
  updated <span id="updated">never</span></div>
<div id="error"></div>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>node</th><th>state</th><th>address</th>
  <th>last beat</th><th>sessions</th><th>memory</th><th>KV used</th>
  <th>decode ms/block</th></tr></thead><tbody></tbody></table>
<h2>Links (measured)</h2>
<table id="links"><thead><tr><th>from</th><th>to</th><th>RTT ms</th>
  <th>up MB/s</th><th>down MB/s</th></tr></thead><tbody></tbody></table>
<h2>Plans</h2>
<div id="plans"></div>
<div id="planner-errors"></div>
<h2>Live</h2>
<table id="sessions"><thead><tr><th>model</th><th>open sessions</th></tr>
  </thead><tbody></tbody></table>
<h2>Training jobs</h2>
<table id="jobs"><thead><tr><th>job</th><th>model</th><th>members</th></tr>
  </thead><tbody></tbody></table>
<script>
'use strict';
const SVG = 'http://www.w3.org/2000/svg';
const COLORS = {alive: '#e6f4ea', suspected: '#fff1e0', down: '#fde7e7',
                unregistered: '#eeeeee', device: '#e8f0fe'};

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function row(cells, attrs) {
  const tr = el('tr', attrs);
  for (const c of cells) {
    const td = typeof c === 'object' && c !== null ? c : el('td', {}, c);
    tr.appendChild(td);
  }
  return tr;
}
function mb(bytes) { return (bytes / 1048576).toFixed(0) + ' MiB'; }
function fill(id, rows) {
  const body = document.querySelector('#' + id + ' tbody');
  body.replaceChildren(...rows);
}

function drawPlan(plan, states) {
  const box = {w: 150, h: 46, gap: 46};
  const stages = plan.stages;
  const width = stages.length * (box.w + box.gap) + 20;
  const height = plan.u_shaped ? 130 : 90;
  const s = svg('svg', {class: 'plan', 'data-model': plan.model,
                        width: width, height: height,
                        viewBox: '0 0 ' + width + ' ' + height});
  s.appendChild(svg('defs')).appendChild((() => {
    const m = svg('marker', {id: 'arrow-' + plan.model, markerWidth: 8,
                             markerHeight: 8, refX: 7, refY: 4,
                             orient: 'auto'});
    m.appendChild(svg('path', {d: 'M0,0 L8,4 L0,8 z', fill: '#555'}));
    return m;
  })());
  stages.forEach((st, i) => {
    const x = 10 + i * (box.w + box.gap), y = 20;
    const state = st.node === 'device' ? 'device' : (states[st.node] || 'unregistered');
    const g = svg('g', {class: 'stage', 'data-node': st.node,
                        'data-blocks': st.first_block + '-' + st.last_block,
                        'data-state': state});
    g.appendChild(svg('rect', {x: x, y: y, width: box.w, height: box.h,
                               rx: 6, fill: COLORS[state] || '#eee',
                               stroke: '#888'}));
    g.appendChild(svg('text', {x: x + 8, y: y + 18}, st.node));
    g.appendChild(svg('text', {x: x + 8, y: y + 36},
        'blocks [' + st.first_block + ', ' + st.last_block + ')' +
        (st.weights ? ' ' + st.weights : '') +
        (st.node === 'device' ? '' : ' · ' + state)));
    s.appendChild(g);
    if (i + 1 < stages.length) {
      s.appendChild(svg('line', {x1: x + box.w, y1: y + box.h / 2,
                                 x2: x + box.w + box.gap - 2,
                                 y2: y + box.h / 2, stroke: '#555',
                                 'marker-end': 'url(#arrow-' + plan.model + ')'}));
    }
  });
  if (plan.u_shaped) {
    // The last server's output returns to the device, which runs the head.
    const last = 10 + (stages.length - 1) * (box.w + box.gap) + box.w / 2;
    const first = 10 + box.w / 2, y = 20 + box.h;
    s.appendChild(svg('path', {d: 'M' + last + ',' + y + ' V' + (y + 30) +
                                  ' H' + first + ' V' + (y + 4),
                               fill: 'none', stroke: '#555',
                               'marker-end': 'url(#arrow-' + plan.model + ')'}));
    s.appendChild(svg('text', {x: first + 10, y: y + 26},
                      'hidden states back to the device (head on the device)'));
  }
  return s;
}

function render(st) {
  document.getElementById('version').textContent = st.plan_version;
  document.getElementById('updated').textContent =
      new Date(st.time * 1000).toLocaleTimeString();
  document.getElementById('error').textContent = '';
  const states = {};
  for (const n of st.nodes) states[n.name] = n.state;
  fill('nodes', st.nodes.map((n) => row([
      n.name,
      el('td', {class: 'state ' + n.state}, n.state),
      n.address || '—',
      n.address ? n.seconds_since_heartbeat.toFixed(1) + ' s ago' : '—',
      el('td', {class: 'num'}, String(n.open_sessions)),
      el('td', {class: 'num'}, n.memory_bytes ? mb(n.memory_bytes) : '—'),
      el('td', {class: 'num'}, n.kv_budget_bytes ?
          mb(n.kv_used_bytes) + ' / ' + mb(n.kv_budget_bytes) : '—'),
      n.compute.map((c) => c.model + (c.weights ? ' ' + c.weights : '') +
                           ': ' + c.decode_ms_per_block.toFixed(3)).join(', ') || '—',
    ], {class: 'node', 'data-node': n.name, 'data-state': n.state})));
  const links = [];
  for (const n of st.nodes) {
    for (const l of n.links) {
      links.push(row([n.name, l.peer,
                      el('td', {class: 'num'}, l.rtt_ms.toFixed(2)),
                      el('td', {class: 'num'}, (l.up_bytes_per_s / 1e6).toFixed(1)),
                      el('td', {class: 'num'}, (l.down_bytes_per_s / 1e6).toFixed(1))],
                     {class: 'link'}));
    }
  }
  fill('links', links);
  const plans = document.getElementById('plans');
  plans.replaceChildren(...st.plans.flatMap((p) => {
    const title = el('div', {class: 'plan-title'},
        p.model + ' — version ' + p.version +
        (p.u_shaped ? ', U-shaped' : '') +
        (p.planned ? ', planned for ' + p.objective + ': predicted ' +
             p.predicted.latency_ms.toFixed(1) + ' ms, decode step ' +
             p.predicted.decode_step_ms.toFixed(2) + ' ms'
                   : ', pinned (' + p.source + ')'));
    return [title, drawPlan(p, states)];
  }));
  document.getElementById('planner-errors').replaceChildren(
      ...st.planner_errors.map((e) => el('div', {class: 'down'}, e)));
  fill('sessions', Object.entries(st.sessions).map(
      ([m, n]) => row([m, el('td', {class: 'num'}, String(n))])));
  fill('jobs', st.jobs.map((j) => row([j.id, j.model, j.members.join(', ')])));
}

async function refresh() {
  try {
    const r = await fetch('status.json', {cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    render(await r.json());
  } catch (e) {
    document.getElementById('error').textContent =
        'controller unreachable: ' + e.message;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
)HTML");
  return *kPage;
}

}  // namespace edgesplit
