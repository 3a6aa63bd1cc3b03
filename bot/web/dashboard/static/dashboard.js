// The dashboard's one shared script (no build step). Pages use window.dashboard:
//   dashboard.csrf            the session's CSRF token (also in <meta name=csrf-token>)
//   dashboard.post(url, data) fetch() POST with the X-CSRF-Token header; data is a
//                             FormData, URLSearchParams, string or object (sent as JSON)
//   dashboard.debounce(fn, ms)
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  function post(url, data) {
    var headers = { "X-CSRF-Token": csrf, "Accept": "application/json" };
    var body = data;
    if (data && !(data instanceof FormData) && !(data instanceof URLSearchParams) &&
        typeof data !== "string") {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(data);
    }
    return fetch(url, { method: "POST", headers: headers, body: body,
                        credentials: "same-origin" });
  }
  function debounce(fn, ms) {
    var timer = null;
    return function () {
      var args = arguments, self = this;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(self, args); }, ms);
    };
  }
  // <form data-confirm="Are you sure?"> asks before it is sent.
  document.addEventListener("submit", function (event) {
    var text = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { event.preventDefault(); }
  });
  window.dashboard = { csrf: csrf, post: post, debounce: debounce };
})();
