// The persona editor (no build step): a line gutter, problems while typing (the
// server runs `bot personas check`'s loader on the text, debounced), the diff against
// what is serving, field hints from the persona JSON Schema, and the prompt preview.
// Everything from the server is put in the page as text (textContent), never HTML.
(function () {
  "use strict";
  var form = document.getElementById("persona-form");
  if (!form) { return; }
  var pid = form.getAttribute("data-pid");
  var yaml = document.getElementById("yaml");
  var gutter = document.getElementById("gutter");
  var statusLine = document.getElementById("status");
  var problemList = document.getElementById("problems");
  var diffBox = document.getElementById("diff");
  var hints = document.getElementById("hints");
  var badLines = {};
  var sequence = 0;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (m, k) {
      return values[k] !== undefined ? String(values[k]) : m;
    });
  }

  // -- the gutter ---------------------------------------------------------------------
  function drawGutter() {
    var count = yaml.value.split("\n").length;
    var frag = document.createDocumentFragment();
    for (var i = 1; i <= count; i++) {
      var span = el("span", badLines[i] ? "bad" : "", i);
      span.setAttribute("data-line", i);
      if (badLines[i]) { span.title = badLines[i]; }
      frag.appendChild(span);
    }
    gutter.textContent = "";
    gutter.appendChild(frag);
    gutter.scrollTop = yaml.scrollTop;
  }
  yaml.addEventListener("scroll", function () { gutter.scrollTop = yaml.scrollTop; });

  function jumpTo(line, column) {
    var lines = yaml.value.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) { offset += lines[i].length + 1; }
    offset += Math.max(0, Math.min(column - 1, (lines[line - 1] || "").length));
    yaml.focus();
    yaml.setSelectionRange(offset, offset);
    var lineHeight = yaml.scrollHeight / Math.max(1, lines.length);
    yaml.scrollTop = Math.max(0, (line - 5) * lineHeight);
  }

  // -- problems -----------------------------------------------------------------------
  function showProblems(problems) {
    badLines = {};
    problemList.textContent = "";
    problems.forEach(function (p) {
      badLines[p.line] = badLines[p.line] ? badLines[p.line] + "\n" + p.text : p.text;
      var item = el("li");
      var button = el("button", "link problem", p.text);
      button.type = "button";
      button.setAttribute("data-line", p.line);
      button.setAttribute("data-column", p.column);
      item.appendChild(button);
      problemList.appendChild(item);
    });
    drawGutter();
  }
  problemList.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.getAttribute && target.getAttribute("data-line")) {
      jumpTo(Number(target.getAttribute("data-line")),
             Number(target.getAttribute("data-column") || 1));
    }
  });
  // The server rendered the first problems; the gutter learns them here.
  Array.prototype.forEach.call(problemList.querySelectorAll("button.problem"), function (b) {
    var line = Number(b.getAttribute("data-line"));
    badLines[line] = b.textContent;
  });

  function showDiff(diff, compared) {
    if (!diffBox || !compared) { return; }
    diffBox.textContent = "";
    if (diff === null) { return; }
    if (!diff.length) { diffBox.appendChild(el("p", "muted", form.getAttribute("data-no-diff"))); return; }
    var wrap = el("div", "scroll");
    var table = el("table", "diff");
    var marks = { added: "+", removed: "-", same: " ", hunk: "" };
    diff.forEach(function (d) {
      var row = el("tr", d.kind);
      row.appendChild(el("td", "num", d.old === null ? "" : d.old));
      row.appendChild(el("td", "num", d.new === null ? "" : d.new));
      row.appendChild(el("td", "mark", marks[d.kind]));
      row.appendChild(el("td", "text", d.text));
      table.appendChild(row);
    });
    wrap.appendChild(table);
    diffBox.appendChild(wrap);
  }

  function check() {
    var mine = ++sequence;
    statusLine.className = "muted";
    statusLine.textContent = form.getAttribute("data-checking");
    var body = new URLSearchParams();
    body.set("yaml", yaml.value);
    window.dashboard.post("/personas/" + pid + "/check", body).then(function (r) {
      return r.json();
    }).then(function (data) {
      if (mine !== sequence) { return; }  // a newer check is on its way
      if (data.error) { statusLine.className = "error"; statusLine.textContent = data.error; return; }
      if (data.busy) {
        statusLine.className = "warn";
        statusLine.textContent = form.getAttribute("data-busy");
        setTimeout(check, 1500);
        return;
      }
      showProblems(data.problems);
      statusLine.className = data.ok ? "ok" : "error";
      statusLine.textContent = data.ok ? form.getAttribute("data-ok")
        : fill(form.getAttribute("data-problems"), { count: data.problems.length });
      showDiff(data.diff, data.compared);
    }).catch(function (err) {
      if (mine === sequence) { statusLine.className = "error"; statusLine.textContent = String(err); }
    });
  }
  var checkSoon = window.dashboard.debounce(check, 400);
  yaml.addEventListener("input", function () { drawGutter(); checkSoon(); });
  drawGutter();

  // -- field hints from the JSON Schema -------------------------------------------------
  var schema = null;
  fetch("/personas/schema.json", { credentials: "same-origin" }).then(function (r) {
    return r.ok ? r.json() : null;
  }).then(function (s) { schema = s; }).catch(function () { schema = null; });

  function deref(node) {
    var guard = 0;
    while (node && node.$ref && guard++ < 20) {
      var parts = node.$ref.replace(/^#\//, "").split("/");
      node = parts.reduce(function (at, key) { return at ? at[key] : null; }, schema);
    }
    return node || {};
  }
  function branches(node) {
    node = deref(node);
    var out = [node];
    ["anyOf", "oneOf", "allOf"].forEach(function (k) {
      (node[k] || []).forEach(function (sub) { out = out.concat(branches(sub)); });
    });
    return out;
  }
  function step(node, key) {
    var found = null;
    branches(node).forEach(function (b) {
      if (found) { return; }
      if (key === "[]" && b.items) { found = b.items; }
      else if (key !== "[]" && b.properties && b.properties[key]) { found = b.properties[key]; }
      else if (key !== "[]" && b.additionalProperties && typeof b.additionalProperties === "object") {
        found = b.additionalProperties;
      }
    });
    return found;
  }
  function fieldsAt(path) {
    var node = schema;
    for (var i = 0; i < path.length && node; i++) { node = step(node, path[i]); }
    var fields = {};
    if (node) {
      branches(node).forEach(function (b) {
        Object.keys(b.properties || {}).forEach(function (k) {
          fields[k] = deref(b.properties[k]).description || b.properties[k].description || "";
        });
      });
    }
    return fields;
  }
  function indentOf(line) { return line.length - line.replace(/^ +/, "").length; }
  // The mapping keys above the cursor: ["lore", "entries", "[]"] inside a lore entry.
  function pathAtCursor() {
    var before = yaml.value.slice(0, yaml.selectionStart);
    var lines = yaml.value.split("\n");
    var lineNo = before.split("\n").length - 1;
    var current = lines[lineNo] || "";
    var column = before.length - before.lastIndexOf("\n") - 1;
    var limit = current.trim() ? indentOf(current) : column;
    var path = [];
    if (/^ *- /.test(current)) { path.push("[]"); limit = indentOf(current) + 1; }
    for (var i = lineNo - 1; i >= 0 && limit > 0; i--) {
      var raw = lines[i];
      var text = raw.trim();
      if (!text || text.charAt(0) === "#") { continue; }
      var ind = indentOf(raw);
      if (ind >= limit) { continue; }
      var rest = raw.slice(ind);
      if (rest.indexOf("- ") === 0) {
        var inner = rest.slice(2).match(/^([A-Za-z_][\w-]*):\s*(#.*)?$/);
        if (inner) { path.unshift(inner[1]); }
        path.unshift("[]");
        limit = ind + 1;
        continue;
      }
      var key = rest.match(/^([A-Za-z_][\w-]*):/);
      if (key) { path.unshift(key[1]); }
      limit = ind;
    }
    return path;
  }
  function showHints(focusFirst) {
    if (!schema || !hints || yaml.readOnly) { return; }
    var fields = fieldsAt(pathAtCursor());
    var names = Object.keys(fields);
    hints.textContent = "";
    if (!names.length) { hints.hidden = true; return; }
    hints.appendChild(el("span", "muted", form.getAttribute("data-fields-here") + ": "));
    names.forEach(function (name) {
      var b = el("button", "secondary hint", name);
      b.type = "button";
      b.title = fields[name];
      b.setAttribute("data-field", name);
      hints.appendChild(b);
    });
    hints.hidden = false;
    if (focusFirst) { hints.querySelector("button").focus(); }
  }
  if (hints) {
    hints.addEventListener("click", function (event) {
      var name = event.target && event.target.getAttribute && event.target.getAttribute("data-field");
      if (!name) { return; }
      var at = yaml.selectionStart;
      var text = name + ": ";
      yaml.value = yaml.value.slice(0, at) + text + yaml.value.slice(yaml.selectionEnd);
      yaml.focus();
      yaml.setSelectionRange(at + text.length, at + text.length);
      drawGutter();
      checkSoon();
    });
  }
  // Tab indents by two spaces; Escape, then Tab, leaves the editor (keyboard users).
  var escaped = false;
  yaml.addEventListener("keydown", function (event) {
    if (event.ctrlKey && (event.key === " " || event.code === "Space")) {
      event.preventDefault();
      showHints(true);
      return;
    }
    if (event.key === "Escape") { escaped = true; return; }
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey &&
        !escaped && !yaml.readOnly) {
      event.preventDefault();
      var at = yaml.selectionStart;
      yaml.value = yaml.value.slice(0, at) + "  " + yaml.value.slice(yaml.selectionEnd);
      yaml.setSelectionRange(at + 2, at + 2);
      drawGutter();
      checkSoon();
    }
    escaped = false;
  });
  yaml.addEventListener("click", function () { showHints(false); });
  yaml.addEventListener("keyup", function (event) {
    if (event.key === "Enter" || event.key.indexOf("Arrow") === 0) { showHints(false); }
  });

  // -- the prompt preview ---------------------------------------------------------------
  var previewForm = document.getElementById("preview-form");
  var previewBox = document.getElementById("preview");
  function renderPreview(data) {
    previewBox.textContent = "";
    if (data.error) { previewBox.appendChild(el("p", "error", data.error)); return; }
    if (!data.ok) {
      var list = el("ul", "problems");
      (data.problems || []).forEach(function (p) { list.appendChild(el("li", "error", p.text)); });
      previewBox.appendChild(list);
      return;
    }
    var p = data.preview;
    previewBox.appendChild(el("p", "tokens", fill(previewForm.getAttribute("data-tokens"),
      { used: p.prompt_tokens, budget: p.budget_tokens, tokenizer: p.tokenizer })));
    p.messages.forEach(function (m, i) {
      var box = el("div", "msg " + m.role);
      box.setAttribute("data-role", m.role);
      box.appendChild(el("h3", "", "[" + i + "] " + m.role + " · " +
        fill(previewForm.getAttribute("data-count"), { count: m.tokens })));
      box.appendChild(el("pre", "", m.content));
      previewBox.appendChild(box);
    });
    var lore = p.lore;
    previewBox.appendChild(el("h3", "", fill(previewForm.getAttribute("data-lore"),
      { used: lore.tokens, budget: lore.budget_tokens })));
    var fired = el("ul", "lore");
    lore.fired.forEach(function (f) {
      var where = f.position === "at_depth" ? "at_depth " + f.depth : f.position;
      var item = el("li", "fired", f.entry + " · " + where + " · " +
        fill(previewForm.getAttribute("data-count"), { count: f.tokens }) + " · " + f.why);
      item.setAttribute("data-entry", f.entry);
      fired.appendChild(item);
    });
    lore.skipped.forEach(function (s) { fired.appendChild(el("li", "warn", s.entry + " · " + s.why)); });
    if (!lore.fired.length && !lore.skipped.length) {
      fired.appendChild(el("li", "muted", previewForm.getAttribute("data-no-lore")));
    }
    previewBox.appendChild(fired);
    if (lore.left_out.length) {
      previewBox.appendChild(el("p", "warn", fill(previewForm.getAttribute("data-left-out"),
        { entries: lore.left_out.join(", ") })));
    }
    previewBox.appendChild(el("p", "muted small", previewForm.getAttribute("data-not-shown")));
  }
  if (previewForm && previewBox) {
    previewForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = new URLSearchParams(new FormData(previewForm));
      body.set("yaml", yaml.value);
      window.dashboard.post(previewForm.getAttribute("action"), body).then(function (r) {
        return r.json();
      }).then(renderPreview).catch(function (err) {
        previewBox.textContent = "";
        previewBox.appendChild(el("p", "error", String(err)));
      });
    });
  }
})();
