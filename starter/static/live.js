// Live stage updates: the case page polls its fragment and swaps it in when the case has changed.
(function () {
  var box = document.getElementById("live");
  if (!box) return;
  var last = null;
  setInterval(function () {
    fetch(box.dataset.src, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        if (last !== null && html !== last) box.innerHTML = html;
        last = html;
      })
      .catch(function () {});
  }, 1500);
})();
