(function () {
  "use strict";
  var status = document.getElementById("tp-js-status");
  var D = JSON.parse(document.getElementById("tp-data").textContent);
  var COLORS = D.colors || {};
  function colorOf(method) { return COLORS[method] || "#444444"; }
  // plotly renders a little HTML in its texts: everything from the data goes in escaped.
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }
  function pct(x) { return x === null || x === undefined ? "-" : (x * 100).toFixed(2); }
  function g(x) { return x === null || x === undefined ? "-" : String(+x.toPrecision(6)); }
  function rgba(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }
  function X(mode, s) { return mode === "log" ? 100 * (1 - s) : s; }

  function accTraces(mode) {
    var lines = D.accuracy.lines, traces = [], drawn = {};
    var DASHES = ["solid", "dot", "dashdot", "longdash", "longdashdot"];
    var sp = [];
    lines.forEach(function (l) { l.points.forEach(function (p) { if (p.mean !== null) sp.push(p.sparsity); }); });
    var hi = Math.max.apply(null, sp.concat([0.5]));
    lines.forEach(function (l) {
      var color = l.dense ? "#333333" : colorOf(l.method);
      var pts = l.points.filter(function (p) { return p.mean !== null; });
      if (!pts.length) return;
      // a method's lines (one per value of other axes): its colour, dashed apart
      var nth = drawn[l.method] = (drawn[l.method] || 0) + 1;
      var hover = pts.map(function (p) {
        var ids = p.ids.map(esc).join(", ") + (p.more_ids ? " +" + p.more_ids + " more" : "");
        return "<b>" + esc(l.name) + "</b><br>target sparsity " + g(p.sparsity) +
          " (" + g(100 * (1 - p.sparsity)) + " % of weights left)<br>achieved sparsity " + g(p.achieved) +
          "<br>test_acc " + pct(p.mean) + " ± " + pct(p.std) + " %<br>n " + p.n + " of " + p.runs +
          " grid points<br>levels: " + ids;
      });
      if (l.dense) {
        // From the dense point (sparsity 0) across the whole axis; only that point hovers.
        var p = pts[0], xs = [X(mode, 0), mode === "log" ? 50 * (1 - hi) : 1.0];
        traces.push({uid: "band:" + l.name, x: [xs[0], xs[1], xs[1], xs[0]],
          y: [(p.mean - p.std) * 100, (p.mean - p.std) * 100, (p.mean + p.std) * 100, (p.mean + p.std) * 100],
          fill: "toself", fillcolor: "rgba(0,0,0,0.07)", line: {width: 0}, hoverinfo: "skip",
          legendgroup: l.name, showlegend: false, type: "scatter", mode: "lines"});
        traces.push({uid: "line:" + l.name, name: esc(l.name) + " (" + pct(p.mean) + " %)", x: xs,
          y: [p.mean * 100, p.mean * 100], mode: "lines+markers", marker: {size: [7, 0]},
          line: {color: color, dash: "dash", width: 1.5}, legendgroup: l.name, type: "scatter",
          text: [hover[0], ""], hoverinfo: ["text", "skip"], meta: {method: l.method, dense: true}});
        return;
      }
      var x = pts.map(function (p) { return X(mode, p.sparsity); });
      var up = pts.map(function (p) { return (p.mean + p.std) * 100; });
      var dn = pts.map(function (p) { return (p.mean - p.std) * 100; });
      traces.push({uid: "band:" + l.name, x: x.concat(x.slice().reverse()), y: up.concat(dn.slice().reverse()),
        fill: "toself", fillcolor: rgba(color, 0.15), line: {width: 0}, hoverinfo: "skip",
        legendgroup: l.name, showlegend: false, type: "scatter", mode: "lines"});
      traces.push({uid: "line:" + l.name, name: esc(l.name), x: x,
        y: pts.map(function (p) { return p.mean * 100; }),
        mode: "lines+markers", line: {color: color, width: 2, dash: DASHES[(nth - 1) % DASHES.length]},
        marker: {size: 7}, legendgroup: l.name,
        type: "scatter", text: hover, hoverinfo: "text", meta: {method: l.method, dense: false}});
    });
    return traces;
  }
  function accLayout(mode) {
    var xa = mode === "log"
      ? {title: {text: "% of weights remaining (log scale)"}, type: "log", autorange: "reversed"}
      : {title: {text: "sparsity (fraction of prunable weights removed)"}, type: "linear", range: [-0.03, 1.0]};
    return {xaxis: xa, yaxis: {title: {text: "test accuracy (%)"}}, hovermode: "closest",
            margin: {l: 60, r: 20, t: 30, b: 50}, legend: {orientation: "v"}, uirevision: "acc"};
  }
  function drawAccuracy() {
    var gd = document.getElementById("acc-plot");
    if (!gd) return;
    var mode = "linear";
    Plotly.newPlot(gd, accTraces(mode), accLayout(mode), {displaylogo: false, responsive: true});
    document.querySelectorAll("input[name=xmode]").forEach(function (el) {
      el.addEventListener("change", function () {
        var seen = {};  // keep what the legend hid
        (gd.data || []).forEach(function (t) { seen[t.uid] = t.visible; });
        var traces = accTraces(el.value);
        traces.forEach(function (t) { if (seen[t.uid] !== undefined) t.visible = seen[t.uid]; });
        Plotly.react(gd, traces, accLayout(el.value), {displaylogo: false, responsive: true});
      });
    });
  }
  function drawCurves() {
    var gd = document.getElementById("curve-plot");
    if (!gd) return;
    // A trace per method, and one per level that several methods' runs share (drawn once,
    // named after them all: dense's only level is IMP's level 0).
    var traces = [], shared = {};
    function trace(methods) {
      var one = methods.length === 1;
      return {name: esc(methods.join(", ")) + (one ? "" : " (one level)"), x: [], y: [], text: [],
        hoverinfo: "text", mode: "lines+markers", marker: {size: 4},
        line: {width: one ? 1.5 : 2.5, color: one ? colorOf(methods[0]) : "#999999", dash: one ? "solid" : "dot"},
        type: "scatter", connectgaps: false, meta: {methods: methods}};
    }
    D.curves.forEach(function (c) {
      var own = trace([c.method]), n = 0;
      c.levels.forEach(function (lv) {
        var start = n, methods = lv.methods || [c.method];
        n += lv.epochs.length;
        if (!lv.epochs.length || methods[0] !== c.method) return;  // a shared level: its first method draws it
        var key = methods.join("\u0000");
        var t = methods.length > 1 ? (shared[key] = shared[key] || trace(methods)) : own;
        if (t.x.length) { t.x.push(null); t.y.push(null); t.text.push(""); }
        lv.epochs.forEach(function (ep, j) {
          if (ep.test_acc === null) return;
          t.x.push(start + j + 1); t.y.push(ep.test_acc * 100);
          t.text.push("<b>" + esc(methods.join(", ")) + "</b> seed " + esc(c.seed) +
            (methods.length > 1 ? " (the same level in each)" : " run " + esc(c.run_id.slice(0, 8))) +
            "<br>level " + esc(lv.level_id) + " (" + (methods.length > 1 ? "" : esc(lv.kind) + ", ") + "depth " +
            lv.depth + ", " + g(100 * lv.density) + " % of weights left)<br>epoch " + (ep.epoch + 1) +
            " of the level: test_acc " + pct(ep.test_acc) + " %");
        });
      });
      if (own.x.length) traces.push(own);
    });
    Object.keys(shared).sort().forEach(function (k) { traces.push(shared[k]); });
    Plotly.newPlot(gd, traces, {xaxis: {title: {text: "epoch, across the run's levels in training order"}},
      yaxis: {title: {text: "test accuracy (%)"}}, hovermode: "closest", margin: {l: 60, r: 20, t: 20, b: 50}},
      {displaylogo: false, responsive: true});
  }
  function drawSearch() {
    var host = document.getElementById("search-plots");
    if (!host || !D.search) return;
    var S = D.search, methods = {};
    S.trials.forEach(function (t) { methods[t.method] = true; });
    Object.keys(S.params).forEach(function (name, pi) {
      var div = document.createElement("div");
      div.className = "plot"; div.id = "search-" + pi;
      host.appendChild(div);
      var traces = Object.keys(methods).sort().map(function (m) {
        // a pruned trial at the last value it reported, as an x, with the epoch it was stopped at
        var val = function (t) { return t.value !== null ? t.value : t.pruned_value; };
        var ts = S.trials.filter(function (t) {
          return t.method === m && val(t) !== null && val(t) !== undefined && name in t.params; });
        return {name: esc(m), x: ts.map(function (t) { return t.params[name]; }),
          y: ts.map(val),
          mode: "markers", type: "scatter", marker: {size: 8, color: colorOf(m), opacity: 0.8,
            symbol: ts.map(function (t) { return t.value !== null ? "circle" : "x"; })},
          hoverinfo: "text", text: ts.map(function (t) {
            var state = t.value === null && t.pruned_epochs ?
              "PRUNED after " + t.pruned_epochs + " epochs" : t.state;
            return "<b>" + esc(m) + "</b> sparsity " + g(t.sparsity) + " seed " + esc(t.seed) + "<br>trial " +
              t.number + " (" + esc(state) + ")<br>" + esc(name) + " = " + esc(t.params[name]) + "<br>" +
              esc(S.metric) + " = " + g(val(t)) + (t.run_id ? "<br>run " + esc(t.run_id.slice(0, 8)) : "");
          })};
      });
      var kind = S.params[name] || "";
      Plotly.newPlot(div, traces, {title: {text: esc(name) + " against " + esc(S.metric)},
        xaxis: {title: {text: esc(name)}, type: kind.indexOf("log") === 0 ? "log" : "-"},
        yaxis: {title: {text: esc(S.metric)}}, hovermode: "closest", margin: {l: 60, r: 20, t: 40, b: 50}},
        {displaylogo: false, responsive: true});
    });
  }
  function b64bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function fail(msg) {
    status.textContent = "Charts unavailable: " + msg + " (the tables need no script).";
    status.className = "warn";
    window.tpError = msg;
  }
  if (typeof DecompressionStream === "undefined") {
    fail("this browser has no DecompressionStream (Chrome/Edge 80+, Firefox 113+, Safari 16.4+)");
    return;
  }
  var gz = new Blob([b64bytes(document.getElementById("tp-plotly-gz").textContent.trim())]);
  new Response(gz.stream().pipeThrough(new DecompressionStream("gzip"))).text().then(function (js) {
    var s = document.createElement("script");
    s.textContent = js;
    document.head.appendChild(s);
    if (typeof Plotly === "undefined") throw new Error("plotly.js did not load");
    drawAccuracy(); drawCurves(); drawSearch();
    status.remove();
    window.tpReady = true;
  }).catch(function (err) { fail(String(err && err.message || err)); });
})();
