// Live stage updates: the case page polls its fragment and swaps it in once the case has changed
// (its version: stage, timeline length, escalation, photos), so a form being filled in stays as is.
(function () {
  var box = document.getElementById("live");
  if (!box) return;
  function version(root) {
    var body = root.querySelector(".live-body");
    return body ? body.dataset.version : null;
  }
  setInterval(function () {
    fetch(box.dataset.src, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = document.createElement("template");
        fresh.innerHTML = html;
        if (version(fresh.content) !== version(box)) box.replaceChildren(fresh.content);
      })
      .catch(function () {});
  }, 1000);
})();
