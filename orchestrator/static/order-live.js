// An order's page, live (GET /ui/orders/{id}): listens to the order's events
// (GET /orders/{id}/events, Server-Sent Events) and on each one fetches the page's live part
// again from the server (?fragment=timeline) and swaps it in. Drawing stays in the server's
// template; this file only knows when to ask. Without JavaScript the page works as it is.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!live || !window.EventSource || !window.fetch) {
    return;
  }
  var hint = document.getElementById("static-hint");
  if (hint) {
    hint.hidden = true;  // this script follows the order: no need to reload
  }

  function say(text, isLive) {
    if (!state) {
      return;
    }
    state.hidden = false;
    state.textContent = text;
    state.classList.toggle("live", isLive);
  }

  // Events come in bursts (a reconnect replays every entry): at most one fetch at a time, and
  // one more after it if anything arrived meanwhile.
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(live.dataset.fragment, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
      })
      .catch(function () {
        say("could not refresh: reload the page", false);
      })
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource(live.dataset.events);
  source.addEventListener("open", function () {
    say("live", true);
  });
  source.addEventListener("step", refresh);
  source.addEventListener("end", function () {
    // the saga owes the order nothing more: the stream is done (EventSource would reconnect)
    source.close();
    say("finished", false);
    refresh();
  });
  source.addEventListener("error", function () {
    if (source.readyState !== EventSource.CLOSED) {
      say("reconnecting…", false);  // EventSource tries again by itself
    }
  });
})();
