"""``quinkgl monitor --web``: the swarm view as one self-contained web page (no CDN, no external file).

``/`` is the page: a peer table and an accuracy-per-round chart drawn as inline SVG by a small inline script,
from a snapshot embedded in the page (so it shows the swarm as soon as it loads) and then from ``/swarm.json``,
which it polls every second. Peer-supplied text (node IDs) is only ever set as ``textContent``, never as HTML.
The server is the standard library's, on its own daemon thread; it reads thread-safe snapshots of the view.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from quinkgl.errors import QuinkGLError, UsageError

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QuinkGL swarm monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } .muted { color: #777; }
table { border-collapse: collapse; margin: 1em 0; } th, td { padding: .3em .8em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .9em; } .swatch { display: inline-block; width: .8em; height: .8em; margin-right: .4em; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
</style></head>
<body>
<h1>Swarm <span id="swarm-name"></span></h1>
<div class="muted">swarm <code id="swarm-id"></code> · observer <code id="observer"></code> ·
<span id="status">snapshot</span></div>
<table><thead><tr><th>node</th><th>peer ID</th><th>round</th><th>val accuracy</th><th>last heard</th>
<th>finished</th></tr></thead><tbody id="peers"></tbody></table>
<div id="summary" class="muted"></div>
<h2 style="font-size:1.1em">Validation accuracy per round</h2>
<svg id="chart" width="720" height="320" viewBox="0 0 720 320" role="img" aria-label="accuracy per round"></svg>
<script id="initial" type="application/json">__SNAPSHOT__</script>
<script>
"use strict";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
}
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}
function render(s) {
  document.getElementById("swarm-name").textContent = s.swarm.name || "";
  document.getElementById("swarm-id").textContent = s.swarm.swarm_id;
  document.getElementById("observer").textContent = s.observer || "starting";
  const body = document.getElementById("peers");
  body.replaceChildren();
  s.peers.forEach((p, i) => {
    const row = body.insertRow();
    row.className = "peer"; row.dataset.node = p.node_id; row.dataset.peerId = p.peer_id;
    const name = cell(row, "");
    name.appendChild(Object.assign(document.createElement("span"), {className: "swatch"})).style.background =
      COLORS[i % COLORS.length];
    name.appendChild(document.createTextNode(p.node_id));
    cell(row, p.peer_id).style.fontFamily = "monospace";
    cell(row, String(p.round), "num");
    cell(row, p.val_accuracy === null ? "-" : p.val_accuracy.toFixed(4), "num");
    cell(row, p.seconds_since_heard.toFixed(1) + " s ago" + (p.connected ? "" : " (disconnected)"), "num");
    cell(row, p.finished ? "finished" : "running");
  });
  document.getElementById("summary").textContent =
    s.peers.length + " peer(s), " + s.finished + " finished";
  chart(s.peers);
}
function chart(peers) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  const W = 720, H = 320, L = 50, R = 130, T = 10, B = 35;
  let maxRound = 1, lo = 1, hi = 0;
  for (const p of peers) {
    for (const [r, a] of p.accuracy) { maxRound = Math.max(maxRound, r); lo = Math.min(lo, a); hi = Math.max(hi, a); }
  }
  if (hi < lo) { lo = 0; hi = 1; }
  lo = Math.max(0, Math.floor(lo * 20) / 20 - 0.05); hi = Math.min(1, Math.ceil(hi * 20) / 20 + 0.05);
  if (hi - lo < 0.1) { lo = Math.max(0, hi - 0.1); }
  const x = r => L + (maxRound === 1 ? 0.5 : (r - 1) / (maxRound - 1)) * (W - L - R);
  const y = a => T + (1 - (a - lo) / (hi - lo)) * (H - T - B);
  svg.appendChild(svgEl("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#ccc"}));
  for (let i = 0; i <= 4; i++) {
    const a = lo + (hi - lo) * i / 4;
    svg.appendChild(svgEl("line", {x1: L, x2: W - R, y1: y(a), y2: y(a), stroke: "#eee"}));
    svg.appendChild(svgEl("text", {x: L - 6, y: y(a) + 4, "text-anchor": "end"}, a.toFixed(2)));
  }
  const step = Math.max(1, Math.ceil(maxRound / 10));
  for (let r = 1; r <= maxRound; r += step)
    svg.appendChild(svgEl("text", {x: x(r), y: H - B + 16, "text-anchor": "middle"}, String(r)));
  svg.appendChild(svgEl("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, "round"));
  peers.forEach((p, i) => {
    const color = COLORS[i % COLORS.length];
    if (p.accuracy.length) {
      const points = p.accuracy.map(([r, a]) => x(r).toFixed(1) + "," + y(a).toFixed(1)).join(" ");
      svg.appendChild(svgEl("polyline", {points: points, fill: "none", stroke: color, "stroke-width": 2,
                                         class: "series", "data-node": p.node_id}));
      for (const [r, a] of p.accuracy) svg.appendChild(svgEl("circle", {cx: x(r), cy: y(a), r: 2.5, fill: color}));
    }
    svg.appendChild(svgEl("rect", {x: W - R + 12, y: T + 4 + i * 16, width: 10, height: 10, fill: color}));
    svg.appendChild(svgEl("text", {x: W - R + 27, y: T + 13 + i * 16}, p.node_id));
  });
}
async function poll() {
  try {
    const response = await fetch("swarm.json", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    document.getElementById("status").textContent = "live, updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("status").textContent = "monitor unreachable (" + err.message + "), retrying";
  }
  setTimeout(poll, 1000);
}
render(JSON.parse(document.getElementById("initial").textContent));
poll();
</script>
</body></html>
"""


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` → ``(host, port)``; a UsageError names what is wrong."""
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--web expects HOST:PORT such as 127.0.0.1:8080 (port 0 picks a free one); got {text!r}")
    return host, int(port_text)


def page(snapshot: dict[str, Any]) -> bytes:
    """The page with ``snapshot`` embedded (``<`` escaped so no peer text can end the script element)."""
    data = json.dumps(snapshot, allow_nan=False).replace("<", "\\u003c")
    return PAGE.replace("__SNAPSHOT__", data).encode()


class SwarmWebServer:
    """Serves the page and ``/swarm.json`` from ``snapshot()`` on a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._reply(200, "text/html; charset=utf-8", page(snapshot()))
                elif path == "/swarm.json":
                    self._reply(200, "application/json", json.dumps(snapshot(), allow_nan=False).encode())
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header(
                    "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                )
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # stdout/stderr belong to the monitor's own output

        server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
        if ":" in host:
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self.server = server_class((host, port), Handler)
        except OSError as exc:
            raise QuinkGLError(f"--web {host}:{port}: cannot listen there: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.host = host
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="quinkgl-monitor-web", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
