(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("qc-data").textContent);
  var storageKey = "spinal_bidsapp-qc:" + window.location.pathname;
  var marks = loadMarks();

  /* Same rules as spinal_bidsapp.reports.qc.build_qc_fail_yaml (tests compare the two). */
  function buildQcFailYaml(records, failures, failKeys) {
    var taskOf = {};
    var files = {};
    var tasks = [];
    failKeys.forEach(function (pair) {
      taskOf[pair[0]] = pair[1];
      if (!files[pair[1]]) { files[pair[1]] = {}; tasks.push(pair[1]); }
    });
    var uncorrectable = {};
    records.forEach(function (record) {
      record.steps.forEach(function (step) {
        if (!failures.has(record.key + ":" + step.step)) { return; }
        var task = taskOf[step.step];
        if (task && step.source) { files[task][step.source] = true; }
        else { uncorrectable[record.key + " " + step.step] = true; }
      });
    });
    var lines = [];
    tasks.forEach(function (task) {
      var names = Object.keys(files[task]).sort();
      if (!names.length) { return; }
      lines.push(task + ":");
      names.forEach(function (name) { lines.push("- " + name); });
    });
    if (!lines.length) { lines.push("{}"); }
    var extra = Object.keys(uncorrectable).sort();
    if (extra.length) {
      lines.push("# failed steps without a manual-correction task (rerun or exclude):");
      extra.forEach(function (entry) { lines.push("# - " + entry); });
    }
    return lines.join("\n") + "\n";
  }

  function loadMarks() {
    try { return JSON.parse(window.localStorage.getItem(storageKey) || "{}"); }
    catch (err) { return {}; }
  }

  function saveMarks() {
    try { window.localStorage.setItem(storageKey, JSON.stringify(marks)); }
    catch (err) { /* storage disabled: marks last for this visit only */ }
  }

  function applyHash(hash) {
    var params = new URLSearchParams(hash.replace(/^#/, ""));
    ["pass", "fail"].forEach(function (state) {
      (params.get(state) || "").split(",").forEach(function (entry) {
        if (entry.indexOf(":") > 0) { marks[entry] = state; }
      });
    });
    saveMarks();
  }

  function failures() {
    return new Set(Object.keys(marks).filter(function (id) { return marks[id] === "fail"; }));
  }

  function element(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function link(path) { return data.root + "/" + path; }

  function stepCard(record, step) {
    var id = record.key + ":" + step.step;
    var card = element("div", {"class": "card", "data-id": id});
    var anchor = element("a", {href: link(record.report) + "#" + step.anchor});
    if (step.figures.length) {
      anchor.appendChild(element("img", {src: link(step.figures[0]), alt: step.title,
                                         loading: "lazy"}));
    }
    card.appendChild(anchor);
    card.appendChild(element("div", {"class": "title", title: step.title},
                             step.title + " (" + step.step + ")"));
    ["pass", "fail"].forEach(function (state) {
      var button = element("button", {type: "button", "class": state}, state === "pass" ? "Pass" : "Fail");
      button.addEventListener("click", function () {
        if (marks[id] === state) { delete marks[id]; } else { marks[id] = state; }
        saveMarks();
        refresh();
      });
      card.appendChild(button);
    });
    return card;
  }

  function buildRows() {
    var body = document.getElementById("qc-rows");
    data.records.forEach(function (record) {
      var row = element("tr", {"class": "qc-row", "data-key": record.key});
      var subject = element("td");
      subject.appendChild(element("a", {href: link(record.report)}, "sub-" + record.subject));
      row.appendChild(subject);
      row.appendChild(element("td", {}, record.session ? "ses-" + record.session : ""));
      var issues = element("td");
      if (record.failure) {
        row.setAttribute("class", "qc-row failed");
        issues.appendChild(element("span", {"class": "badge error"}, "failed"));
        issues.appendChild(element("div", {"class": "failure"}, record.failure));
      } else if (record.errors) { issues.appendChild(element("span", {"class": "badge error"}, record.errors + " err")); }
      if (record.warnings) { issues.appendChild(element("span", {"class": "badge warning"}, record.warnings + " warn")); }
      row.appendChild(issues);
      var steps = element("td");
      var box = element("div", {"class": "steps"});
      record.steps.forEach(function (step) { box.appendChild(stepCard(record, step)); });
      steps.appendChild(box);
      row.appendChild(steps);
      body.appendChild(row);
    });
  }

  function refresh() {
    var counts = {pass: 0, fail: 0, unrated: 0};
    var filter = document.getElementById("qc-filter").value;
    document.querySelectorAll("tr.qc-row").forEach(function (row) {
      var states = [];
      row.querySelectorAll(".card").forEach(function (card) {
        var state = marks[card.getAttribute("data-id")] || "unrated";
        states.push(state);
        counts[state] += 1;
        card.classList.toggle("pass", state === "pass");
        card.classList.toggle("fail", state === "fail");
        card.querySelector("button.pass").classList.toggle("on", state === "pass");
        card.querySelector("button.fail").classList.toggle("on", state === "fail");
      });
      var shown = filter === "all" || states.indexOf(filter) >= 0;
      row.classList.toggle("hidden", !shown);
    });
    document.getElementById("qc-summary").textContent =
      counts.pass + " passed, " + counts.fail + " failed, " + counts.unrated + " unrated steps";
    document.getElementById("qc-fail-yml").textContent =
      buildQcFailYaml(data.records, failures(), data.failKeys);
  }

  function download() {
    var text = buildQcFailYaml(data.records, failures(), data.failKeys);
    var anchor = element("a", {download: "qc_fail.yml"});
    anchor.href = URL.createObjectURL(new Blob([text], {type: "text/yaml"}));
    document.body.appendChild(anchor);
    anchor.click();
    document.body.removeChild(anchor);
  }

  applyHash(window.location.hash);
  buildRows();
  refresh();
  document.getElementById("qc-filter").addEventListener("change", refresh);
  document.getElementById("qc-download").addEventListener("click", download);
  document.getElementById("qc-clear").addEventListener("click", function () {
    marks = {};
    saveMarks();
    refresh();
  });
  window.addEventListener("hashchange", function () { applyHash(window.location.hash); refresh(); });
}());
