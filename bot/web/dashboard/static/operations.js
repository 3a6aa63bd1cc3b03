// The operations page's live charts: polls /operations/metrics.json (the same numbers
// as /metrics) every 5 s and draws each series as a line. Counters (turns, failures,
// tokens) are drawn as their change per poll; depths as they are.
(function () {
  "use strict";
  var COUNTERS = { turns: true, failures: true, tokens: true };
  var figures = document.querySelectorAll("figure[data-series]");
  if (!figures.length) { return; }
  function draw(points) {
    figures.forEach(function (figure) {
      var key = figure.getAttribute("data-series");
      var values = points.map(function (p) { return Number(p[key]) || 0; });
      if (COUNTERS[key]) {
        values = values.slice(1).map(function (v, i) { return Math.max(0, v - values[i]); });
      }
      var line = figure.querySelector("polyline");
      var shown = figure.querySelector("[data-value]");
      var last = points.length ? Number(points[points.length - 1][key]) || 0 : 0;
      if (shown) { shown.textContent = String(Math.round(last * 100) / 100); }
      if (!line || values.length < 2) { if (line) { line.setAttribute("points", ""); } return; }
      var max = Math.max.apply(null, values.concat([1]));
      var step = 300 / (values.length - 1);
      line.setAttribute("points", values.map(function (v, i) {
        return (i * step).toFixed(1) + "," + (98 - (v / max) * 96).toFixed(1);
      }).join(" "));
    });
  }
  function poll() {
    fetch("/operations/metrics.json", { headers: { "Accept": "application/json" },
                                        credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { draw(data.points); } })
      .catch(function () {});
  }
  poll();
  setInterval(poll, 5000);
})();
