// brine dashboard: follows the fleet's events (Server-Sent Events from /events/stream) and
// updates the page in place. The pages work without it; it only saves reloads.
(function () {
  "use strict";
  if (!window.EventSource) return;

  function text(el, value) { if (el) el.textContent = value; }
  function cell(tr, cls, value) {
    var td = document.createElement("td");
    td.className = cls;
    if (value !== undefined) td.textContent = value;
    tr.appendChild(td);
    return td;
  }
  function jobLink(id) {
    var a = document.createElement("a");
    a.href = "/jobs/" + encodeURIComponent(id);
    a.textContent = id;
    return a;
  }
  function rowOf(table, attr, id) {
    if (!table) return null;
    var rows = table.querySelectorAll("tr[" + attr + "]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute(attr) === id) return rows[i];
    }
    return null;
  }

  var hosts = document.getElementById("hosts");
  var jobs = document.getElementById("jobs");
  var job = document.getElementById("job");
  var jobHosts = document.getElementById("job-hosts");
  if (!hosts && !jobs && !job) return;

  function onEvent(e) {
    switch (e.kind) {
      case "host_linked":
      case "host_lost": {
        var row = rowOf(hosts, "data-host", e.minion_id);
        if (row) text(row.querySelector(".link"), e.kind === "host_linked" ? "linked" : "not linked");
        break;
      }
      case "job_started": {
        if (jobs && !rowOf(jobs, "data-job", e.job_id) && !/[?&]before=/.test(location.search)) {
          var tr = document.createElement("tr");
          tr.setAttribute("data-job", e.job_id);
          cell(tr, "id").appendChild(jobLink(e.job_id));
          cell(tr, "status", "running");
          cell(tr, "kind", e.job_type);
          cell(tr, "started", new Date(e.at_unix_ms).toISOString().replace(/\.\d+Z$/, "Z"));
          cell(tr, "hosts", String(e.targets.length));
          cell(tr, "caller", e.caller);
          var body = jobs.tBodies[0] || jobs;
          body.insertBefore(tr, body.firstChild);
        }
        (e.targets || []).forEach(function (host) {
          var row = rowOf(hosts, "data-host", host);
          var td = row && row.querySelector(".last-job");
          if (td) { td.textContent = ""; td.appendChild(jobLink(e.job_id)); }
        });
        break;
      }
      case "host_reported": {
        if (job && job.getAttribute("data-job") === e.job_id) {
          var r = rowOf(jobHosts, "data-host", e.minion_id);
          if (r) text(r.querySelector(".status"), e.status);
        }
        break;
      }
      case "job_finished": {
        var jr = rowOf(jobs, "data-job", e.job_id);
        if (jr) text(jr.querySelector(".status"), e.outcome);
        (e.hosts || []).forEach(function (h) {
          var row = rowOf(hosts, "data-host", h.minion_id);
          var td = row && row.querySelector(".last-job");
          if (td) { td.textContent = ""; td.appendChild(jobLink(e.job_id)); }
        });
        if (job && job.getAttribute("data-job") === e.job_id) {
          (e.hosts || []).forEach(function (h) {
            var row = rowOf(jobHosts, "data-host", h.minion_id);
            if (row) text(row.querySelector(".status"), h.status);
          });
          text(job.querySelector("p .status"), e.outcome);
          job.setAttribute("data-state", "finished");
        }
        break;
      }
    }
  }

  var source = new EventSource("/events/stream");
  source.onmessage = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (err) { return; }
    onEvent(event);
  };
})();
