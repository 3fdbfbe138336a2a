// The trial screen: shows the current trial from the JSON API, takes a click or a key,
// measures the response time from both images being displayed to the answer, and posts it.
// Everything else (order, sides, what comes next) is decided on the server.
(function () {
  "use strict";
  var app = document.getElementById("trial-app");
  var api = app.getAttribute("data-api");
  var answerUrl = app.getAttribute("data-answer");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var $ = function (id) { return document.getElementById(id); };
  var trial = null;      // the trial on screen
  var shownAt = null;    // performance.now() when its images were displayed
  var busy = true;

  function setStatus(text) { $("status").textContent = text || ""; }

  function go(url) { window.location.assign(url); }

  function handle(body) {
    if (body.csrf_token) { csrf = body.csrf_token; }
    if (body.phase !== "trials" || !body.trial) { go(body.redirect); return; }
    render(body.trial, body.progress);
    (body.preload || []).forEach(function (url) { var img = new Image(); img.src = url; });
  }

  function showImage(img, url) {
    return new Promise(function (resolve) {
      img.onload = function () { resolve(); };
      img.onerror = function () { resolve(); };
      img.src = url;
      if (img.complete && img.naturalWidth) { resolve(); }
    }).then(function () { return img.decode ? img.decode().catch(function () {}) : null; });
  }

  function render(t, progress) {
    trial = t; shownAt = null; busy = true;
    app.classList.add("busy");
    setStatus("");
    $("question").textContent = t.question;
    $("prompt").hidden = !t.prompt;
    $("prompt").textContent = t.prompt ? "\u201c" + t.prompt + "\u201d" : "";
    $("practice-banner").hidden = !t.practice;
    if (progress) {
      var done = t.practice ? progress.practice_done : progress.done;
      var total = t.practice ? progress.practice_total : progress.total;
      var pct = total ? Math.round(100 * done / total) : 0;
      $("progress-bar").style.width = pct + "%";
      $("progress").setAttribute("aria-valuenow", String(pct));
      $("progress-text").textContent = (t.practice ? "Practice " : "") + (done + 1) + " / " + total;
    }
    var pair = t.kind === "pair";
    $("pair").hidden = !pair; $("pair-controls").hidden = !pair; $("single").hidden = pair;
    var loads;
    if (pair) {
      $("choose-tie").hidden = !t.tie;
      loads = [showImage($("img-left"), t.images.left), showImage($("img-right"), t.images.right)];
    } else {
      buildScale(t.scale);
      loads = [showImage($("img-single"), t.images.image)];
    }
    Promise.all(loads).then(function () {
      // the next frame is the first one with the images painted
      window.requestAnimationFrame(function () {
        if (trial !== t) { return; }
        shownAt = performance.now(); busy = false;
        app.classList.remove("busy");
      });
    });
  }

  function buildScale(scale) {
    var box = $("scale");
    box.textContent = "";
    for (var v = scale.min; v <= scale.max; v++) {
      var b = document.createElement("button");
      b.type = "button";
      b.setAttribute("data-rating", String(v));
      b.textContent = v + " \u2013 " + scale.labels[String(v)];
      box.appendChild(b);
    }
  }

  function submit(fields) {
    if (busy || !trial || shownAt === null) { return; }
    busy = true; app.classList.add("busy");
    var body = Object.assign({ trial: trial.id, rt_ms: Math.round((performance.now() - shownAt) * 10) / 10 }, fields);
    post(body, 0);
  }

  function post(body, attempt) {
    fetch(answerUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return { status: r.status, data: data }; });
    }).then(function (res) {
      if (res.status === 200) { handle(res.data); return; }
      if (res.status >= 500) { retry(body, attempt); return; }
      if (res.data.redirect) { go(res.data.redirect); return; }
      if (res.status === 409) { load(); return; }
      setStatus(res.data.error || "Your answer was not accepted; please reload the page.");
      busy = false; app.classList.remove("busy");
    }).catch(function () { retry(body, attempt); });
  }

  function retry(body, attempt) {
    // the same answer again is safe: the server records a trial's answer once
    setStatus("Connection problem, retrying\u2026");
    window.setTimeout(function () { post(body, attempt + 1); }, Math.min(8000, 500 * Math.pow(2, attempt)));
  }

  function load() {
    fetch(api, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(handle)
      .catch(function () { setStatus("Connection problem, retrying\u2026"); window.setTimeout(load, 2000); });
  }

  app.addEventListener("click", function (e) {
    var target = e.target.closest("[data-choice],[data-rating]");
    if (!target) { return; }
    if (target.hasAttribute("data-choice")) { submit({ choice: target.getAttribute("data-choice") }); }
    else { submit({ rating: Number(target.getAttribute("data-rating")) }); }
  });

  document.addEventListener("keydown", function (e) {
    if (!trial || e.altKey || e.ctrlKey || e.metaKey || e.repeat) { return; }
    if (trial.kind === "pair") {
      if (e.key === "ArrowLeft") { submit({ choice: "left" }); }
      else if (e.key === "ArrowRight") { submit({ choice: "right" }); }
      else if (trial.tie && (e.key === "ArrowDown" || e.key === " ")) { submit({ choice: "tie" }); }
      else { return; }
    } else {
      var v = Number(e.key);
      if (!(e.key.length === 1 && v >= trial.scale.min && v <= trial.scale.max)) { return; }
      submit({ rating: v });
    }
    e.preventDefault();
  });

  load();
})();
