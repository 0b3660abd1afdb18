// Conveniences only: every page works without this script.
(function () {
  "use strict";

  // 收件: filter the item list as the clerk types (offline, no request).
  var search = document.getElementById("item-search");
  var list = document.getElementById("item-list");
  if (search && list) {
    var items = list.querySelectorAll("li[data-search]");
    var count = document.getElementById("item-count");
    search.addEventListener("input", function () {
      var q = search.value.trim();
      var n = 0;
      items.forEach(function (li) {
        var hide = q !== "" && li.getAttribute("data-search").indexOf(q) < 0;
        li.classList.toggle("hidden", hide);
        if (!hide) n++;
      });
      if (count) count.textContent = n;
    });
  }

  // GB 11643 check digit of an 18-character ID number, as the server checks it.
  function idNumberProblem(v) {
    v = v.trim().toUpperCase();
    if (v === "") return "";
    if (v.length !== 18) return "身份证号应为18位（现为" + v.length + "位）。";
    if (!/^[0-9]{17}[0-9X]$/.test(v)) return "身份证号只能是数字，最后一位可以是X。";
    var w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    var sum = 0;
    for (var i = 0; i < 17; i++) sum += (v.charCodeAt(i) - 48) * w[i];
    var expected = "10X98765432".charAt(sum % 11);
    if (v.charAt(17) !== expected) return "身份证号校验位不正确（应为 " + expected + "，输入的是 " + v.charAt(17) + "），请与申请人核对。";
    return "";
  }
  document.querySelectorAll("input[data-check=id-number]").forEach(function (input) {
    var out = document.getElementById(input.id + "-error");
    var check = function () {
      var p = idNumberProblem(input.value);
      input.classList.toggle("invalid", p !== "");
      if (out) out.textContent = p;
    };
    input.addEventListener("blur", check);
    input.addEventListener("input", function () { if (input.value.length >= 18) check(); });
  });

  // Print buttons of the receipt and the notice.
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });

  // 同步: follow a running sync and show the page again when it ends.
  var status = document.getElementById("sync-status");
  if (status && status.getAttribute("data-running") === "true") {
    var poll = function () {
      fetch("/sync/status", { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          if (s.running_since === null) { window.location.reload(); return; }
          if (s.live) {
            var mb = function (b) { return (b / 1e6).toFixed(1); };
            var set = function (id, v) { var e = document.getElementById(id); if (e) e.textContent = v; };
            set("live-events-sent", s.live.events_sent);
            set("live-events-received", s.live.events_received);
            set("live-files-received", s.live.files_received);
            set("live-mb-received", mb(s.live.file_bytes_received));
            set("live-files-to-receive", s.live.files_to_receive);
            set("live-files-sent", s.live.files_sent);
            set("live-mb-sent", mb(s.live.file_bytes_sent));
            set("live-rate", mb(s.live.file_bytes_per_second));
            set("live-phase", s.live_phase);
          }
          setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 2000); });
    };
    setTimeout(poll, 1000);
  }
})();
