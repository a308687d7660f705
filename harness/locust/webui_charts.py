"""The script that draws the "Streaming latency" tab's charts over time (served at /harness/charts.js).

Locust's extended tabs render tables only, so the page loads this script too: while the tab is open
(``?tab=harness-latency``) it polls ``/harness/series`` every 2 s (the per-second series of
:class:`harness.locust.live.LiveSeries`) and draws one SVG line chart per panel above the tab's table,
like Locust's own Charts tab: TTFT p50/p99, ITL p99, output tokens/s by token arrival, overload rate
and requests in flight. Plain DOM and SVG, no library (the UI runs offline).
"""

from __future__ import annotations

#: panels: (title, unit, [(series key, legend, colour)]); the series keys of LiveSeries.view
PANELS: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    ("TTFT (from intended start)", "ms", [("ttft_p50_ms", "p50", "#1f77b4"), ("ttft_p99_ms", "p99", "#ff7f0e")]),
    ("ITL", "ms", [("itl_p99_ms", "p99", "#9467bd")]),
    ("Output tokens/s (by token arrival)", "tokens/s", [("output_tokens_per_s", "tokens/s", "#2ca02c")]),
    ("Overload rate (overloaded / attempted)", "%", [("overload_rate", "overload rate", "#d62728")]),
    ("Requests in flight (time-averaged)", "requests", [("in_flight", "in flight", "#8c564b")]),
]


def script(tab_key: str) -> str:
    """The chart script for the tab ``tab_key``."""
    import json

    return _JS.replace("__TAB__", json.dumps(tab_key)).replace("__PANELS__", json.dumps(PANELS))


_JS = r"""
(function () {
  "use strict";
  var TAB = __TAB__, PANELS = __PANELS__, W = 480, H = 210, L = 52, R = 26, T = 30, B = 28;
  var box = null;
  function active() { return new URLSearchParams(window.location.search).get("tab") === TAB; }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
  function nice(v) {
    if (!(v > 0)) return 1;
    var e = Math.pow(10, Math.floor(Math.log10(v))), f = v / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
  }
  function fmt(v) { return v === 0 ? "0" : v >= 100 ? v.toFixed(0) : v >= 10 ? String(Math.round(v * 10) / 10) : String(+v.toPrecision(2)); }
  function chart(panel, d) {
    var title = panel[0], unit = panel[1], lines = panel[2], t = d.t_s || [];
    var scale = unit === "%" ? 100 : 1, ymax = 0;
    lines.forEach(function (ln) { (d[ln[0]] || []).forEach(function (v) { if (v !== null && v * scale > ymax) ymax = v * scale; }); });
    var ystep = nice(ymax * 1.05 / 4);
    ymax = 4 * ystep;
    var tstep = nice((t.length ? Math.max(t[t.length - 1], 4) : 4) / 5), tmax = tstep * Math.ceil((t.length ? Math.max(t[t.length - 1], 1) : 1) / tstep);
    function x(s) { return L + (W - L - R) * s / tmax; }
    function y(v) { return H - B - (H - T - B) * v / ymax; }
    var svg = '<svg viewBox="0 0 ' + W + ' ' + H + '" width="100%" role="img" aria-label="' + esc(title) + '" ' +
      'style="font:11px sans-serif;fill:currentColor">';
    svg += '<text x="' + L + '" y="14" style="font-weight:600;font-size:12px">' + esc(title) + '</text>';
    for (var k = 0; k <= 4; k++) {
      var gv = ymax * k / 4, gy = y(gv);
      svg += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + gy + '" y2="' + gy + '" stroke="currentColor" stroke-opacity="0.15"/>';
      svg += '<text x="' + (L - 4) + '" y="' + (gy + 4) + '" text-anchor="end">' + fmt(gv) + '</text>';
    }
    svg += '<text x="10" y="' + (T + (H - T - B) / 2) + '" transform="rotate(-90 10 ' + (T + (H - T - B) / 2) + ')" text-anchor="middle">' + esc(unit) + '</text>';
    for (var sx = 0; sx <= tmax + 1e-9; sx += tstep) {
      svg += '<text x="' + x(sx) + '" y="' + (H - 8) + '" text-anchor="middle">' + fmt(sx) + (sx + tstep > tmax + 1e-9 ? " s" : "") + '</text>';
    }
    var lx = W - R;
    lines.slice().reverse().forEach(function (ln) {
      var vals = d[ln[0]] || [], path = "", pen = false, last = null;
      for (var i = 0; i < vals.length; i++) {
        if (vals[i] === null) { pen = false; continue; }
        path += (pen ? "L" : "M") + x(t[i]).toFixed(1) + "," + y(vals[i] * scale).toFixed(1);
        pen = true; last = vals[i] * scale;
      }
      svg += '<path d="' + path + '" fill="none" stroke="' + ln[2] + '" stroke-width="1.8"/>';
      var label = ln[1] + (last === null ? "" : " " + fmt(last));
      svg += '<text x="' + lx + '" y="14" text-anchor="end" fill="' + ln[2] + '">' + esc(label) + '</text>';
      lx -= 8 + 6.5 * label.length;
    });
    if (!t.length) svg += '<text x="' + (W / 2) + '" y="' + (H / 2) + '" text-anchor="middle" fill-opacity="0.6">no finished requests yet</text>';
    return svg + "</svg>";
  }
  function place() {
    var table = document.querySelector("table");
    if (!table) return false;
    var host = table.closest(".MuiTableContainer-root") || table;
    box = document.createElement("div");
    box.id = "harness-charts";
    box.style.cssText = "display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px;margin:12px 0 20px";
    host.parentNode.insertBefore(box, host);
    return true;
  }
  function tick() {
    if (!active()) { if (box) { box.remove(); box = null; } return; }
    if ((!box || !document.body.contains(box)) && !place()) return;
    fetch("./harness/series").then(function (r) { return r.json(); }).then(function (d) {
      if (!box) return;
      box.innerHTML = PANELS.map(function (p) {
        return '<div style="border:1px solid rgba(128,128,128,.3);border-radius:6px;padding:6px">' + chart(p, d) + "</div>";
      }).join("") + '<div style="grid-column:1/-1;opacity:.7;font-size:12px">Per second of the run (s since the ' +
        "first request). Requests count when they finish: while the test runs the charts stop " +
        (d.settle_s && d.settle_s.length ? d.settle_s[0] + " s" : "E2E p99 + 1 s") +
        " before now, whose seconds are still filling.</div>";
    }).catch(function () {});
  }
  setInterval(tick, 2000);
  setTimeout(tick, 300);
})();
"""
