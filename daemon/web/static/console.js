// segwatch console: the one script (progressive enhancement; every page works without it).
// The dashboard reloads itself every data-refresh seconds while its "Refresh" box is
// ticked; the choice is kept for this tab. Nothing else runs.
"use strict";
(function () {
  var box = document.getElementById("auto-refresh");
  if (!box) { return; }
  var seconds = Number(box.getAttribute("data-seconds")) || 30;
  var key = "segwatch.refresh";
  box.hidden = false;
  var toggle = box.querySelector("input");
  toggle.checked = window.sessionStorage.getItem(key) !== "off";
  var timer = null;
  function arm() {
    if (timer) { window.clearTimeout(timer); timer = null; }
    if (toggle.checked) { timer = window.setTimeout(function () { window.location.reload(); }, seconds * 1000); }
  }
  toggle.addEventListener("change", function () {
    window.sessionStorage.setItem(key, toggle.checked ? "on" : "off");
    arm();
  });
  arm();
}());
