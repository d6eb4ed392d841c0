/* Job metrics charts: every <canvas data-metrics> gets a Chart.js stacked bar chart of the
   profiles added, removed and omitted per time bucket. The data is the JSON of the
   <script type="application/json"> next to the canvas (portal.metrics.series); nothing is
   evaluated. Charts are drawn on load and again whenever htmx settles new content, and a
   canvas that htmx removes has its chart destroyed. Needs vendor/chart.umd.min.js first. */
(function () {
  "use strict";

  var SERIES = [
    { key: "added", label: "Added", variable: "--status-completed", fallback: "#15803d" },
    { key: "removed", label: "Removed", variable: "--status-failed", fallback: "#b42318" },
    { key: "omitted", label: "Omitted", variable: "--status-paused", fallback: "#5b6472" },
  ];

  function colour(variable, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(variable).trim();
    return value || fallback;
  }

  // Bucket starts are ISO times in UTC. The chart shows them in the person's zone
  // (body data-timezone, as every time in the portal), except days: a day's bucket is a
  // UTC day, so it is named by its UTC date.
  function zone() {
    return (document.body && document.body.dataset.timezone) || "UTC";
  }

  function daily(labels) {
    return labels.every(function (iso) { return new Date(iso).getUTCHours() === 0; });
  }

  var formats = {};
  function parts(iso, timeZone) {
    if (!formats[timeZone]) {
      formats[timeZone] = new Intl.DateTimeFormat("en-GB", {
        timeZone: timeZone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23",
      });
    }
    var found = {};
    formats[timeZone].formatToParts(new Date(iso)).forEach(function (part) {
      found[part.type] = part.value;
    });
    return found;
  }

  function tick(iso, byDay) {
    var p = parts(iso, byDay ? "UTC" : zone());
    var day = p.month + "-" + p.day;
    return byDay ? day : day + " " + p.hour + ":" + p.minute;
  }

  function exact(iso, byDay) {
    var timeZone = byDay ? "UTC" : zone();
    var p = parts(iso, timeZone);
    var day = p.year + "-" + p.month + "-" + p.day;
    return byDay ? day + " (UTC day)" : day + " " + p.hour + ":" + p.minute + " " + timeZone;
  }

  // The JSON each canvas was last drawn from: a canvas already showing its data is left be.
  var drawn = new WeakMap();

  function dataScript(canvas) {
    var parent = canvas.parentElement;
    return parent && parent.querySelector(':scope > script[type="application/json"]');
  }

  function destroy(canvas) {
    var chart = window.Chart && window.Chart.getChart(canvas);
    if (chart) chart.destroy();
  }

  function draw(canvas) {
    if (!window.Chart) return;
    var script = dataScript(canvas);
    if (!script) return;
    var text = script.textContent;
    if (drawn.get(canvas) === text && window.Chart.getChart(canvas)) return;
    var data;
    try {
      data = JSON.parse(text);
    } catch (error) {
      console.error("metrics: unreadable chart data", error);
      return;
    }
    if (!data || !Array.isArray(data.labels)) return;
    destroy(canvas); // a redraw on the same canvas replaces its chart
    drawn.set(canvas, text);
    var byDay = daily(data.labels);
    var options = {
      responsive: true,
      aspectRatio: 3,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: true, title: { display: true, text: byDay ? "Day (UTC)" : zone() } },
        y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            title: function (items) {
              if (!items.length) return "";
              return exact(data.labels[items[0].dataIndex], byDay);
            },
          },
        },
      },
    };
    if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
      options.animation = false;
    }
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels.map(function (iso) { return tick(iso, byDay); }),
        datasets: SERIES.map(function (series) {
          return {
            label: series.label,
            data: data[series.key] || [],
            backgroundColor: colour(series.variable, series.fallback),
            stack: "profiles",
          };
        }),
      },
      options: options,
    });
  }

  function drawAll() {
    document.querySelectorAll("canvas[data-metrics]").forEach(draw);
  }

  // Charts whose canvas has left the page.
  function sweep() {
    if (!window.Chart) return;
    Object.values(window.Chart.instances).forEach(function (chart) {
      if (!chart.canvas || !chart.canvas.isConnected) chart.destroy();
    });
  }

  function start() {
    drawAll();
    // htmx fires afterSettle on each element it swapped in. Other fragments of the page
    // (the live summary, the log poller) settle every second: canvases still showing their
    // data are skipped, so their charts are not redrawn.
    document.body.addEventListener("htmx:afterSettle", function () {
      sweep();
      drawAll();
    });
    // A canvas htmx is about to remove (the fragment swapped for another frame).
    document.body.addEventListener("htmx:beforeCleanupElement", function (event) {
      var element = event.target;
      if (element.matches && element.matches("canvas[data-metrics]")) destroy(element);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
