/* gridflow workbench: small additions to pages that work without it (progressive enhancement).
   - the inbox asks every 20 s what arrived since it was drawn and shows a badge (polling);
   - a submitted command still waiting for the case processor is asked for until it is decided,
     then the page reloads to show the decision;
   - 常用回复: picking a reply template fills the note;
   - the error summary takes the focus, as GOV.UK's does. */
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  function pollInbox(box) {
    var url = box.getAttribute("data-inbox-updates");
    var since = box.getAttribute("data-since");
    var badge = box.querySelector(".badge-new");
    var count = box.querySelector("[data-new-count]");
    var title = document.title;
    var params = new URLSearchParams(window.location.search);
    params.delete("page"); params.delete("cmd");
    params.set("since", since);
    function tick() {
      fetch(url + "?" + params.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          Object.keys(data.counts || {}).forEach(function (tab) {
            var el = document.querySelector('[data-count="' + tab + '"]');
            if (el) { el.textContent = data.counts[tab]; }
          });
          if (data["new"] > 0) {
            count.textContent = data["new"];
            badge.hidden = false;
            document.title = "(" + data["new"] + ") " + title;
          }
        })
        .catch(function () { /* offline for a moment: the next tick tries again */ });
    }
    window.setInterval(tick, 20000);
  }

  function waitForOutcome(el) {
    var id = el.getAttribute("data-command");
    var tries = 0;
    function ask() {
      tries += 1;
      fetch("/api/v1/commands/" + encodeURIComponent(id) + "?wait=5", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && data.status && data.status !== "pending") { window.location.reload(); }
          else if (tries < 24) { window.setTimeout(ask, 500); }
        })
        .catch(function () { if (tries < 24) { window.setTimeout(ask, 3000); } });
    }
    ask();
  }

  function templatePicker(select) {
    select.addEventListener("change", function () {
      var option = select.options[select.selectedIndex];
      var text = option ? option.getAttribute("data-text") : "";
      var target = document.getElementById(select.getAttribute("data-template-picker"));
      if (!text || !target) { return; }
      target.value = target.value.trim() ? target.value.replace(/\s+$/, "") + "\n" + text : text;
      target.focus();
    });
  }

  function selectAll(box) {
    box.addEventListener("change", function () {
      document.querySelectorAll('input[name="task_id"]').forEach(function (c) { c.checked = box.checked; });
    });
  }

  onReady(function () {
    var summary = document.querySelector("[data-autofocus]");
    if (summary) { summary.focus(); }
    var inbox = document.querySelector("[data-inbox-updates]");
    if (inbox) { pollInbox(inbox); }
    document.querySelectorAll("[data-pending]").forEach(waitForOutcome);
    document.querySelectorAll("[data-template-picker]").forEach(templatePicker);
    var all = document.getElementById("select-all");
    if (all) { selectAll(all); }
  });
})();
