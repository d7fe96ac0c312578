// doorzet console: the one thing pages do with script is keep an escalation's timeline live.
// Everything else works without it.
(function () {
  "use strict";
  var list = document.getElementById("timeline");
  if (!list || !window.EventSource) return;
  var labels = {};
  try { labels = JSON.parse(list.dataset.labels || "{}"); } catch (e) { labels = {}; }
  var format = new Intl.DateTimeFormat(list.dataset.lang === "en" ? "en-GB" : "nl-NL", {
    dateStyle: "medium", timeStyle: "short", timeZone: "Europe/Amsterdam"
  });
  var changed = document.getElementById("changed");
  var source = new EventSource(list.dataset.events);
  source.onmessage = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    if (document.getElementById("event-" + event.sequence)) return;
    var item = document.createElement("li");
    item.id = "event-" + event.sequence;
    var time = document.createElement("time");
    if (event.occurredAt) {
      time.dateTime = event.occurredAt;
      time.textContent = format.format(new Date(event.occurredAt));
    }
    item.appendChild(time);
    var name = labels[event.event] || event.event || "";
    item.appendChild(document.createTextNode(" " + name + " (" + (labels.tier || "") + " " + event.tier + ")"));
    list.appendChild(item);
    if (changed) changed.hidden = false;
  };
})();
