// The trial screen: shows the current trial from the JSON API, takes a click, a tap or a key,
// and posts the answer with the response time (from the images being displayed).
// Everything else (order, sides, what comes next) is decided on the server.
//
// #trial-app's data-state:
//   loading  the trial's images are on their way (dimmed; no input)
//   locked   the images are displayed, for less than the trial's min_display_ms: input is
//            ignored, so that a key pressed twice, or meant for the previous trial, cannot
//            answer this one
//   ready    an answer is taken (once: then "sending")
//   sending  the answer is on its way (dimmed; no input)
// The class "busy" is on in every state but "ready".
(function () {
  "use strict";
  var app = document.getElementById("trial-app");
  var api = app.getAttribute("data-api");
  var answerUrl = app.getAttribute("data-answer");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var $ = function (id) { return document.getElementById(id); };
  var MAX_IMAGE_PX = 720;  // larger images are hard to compare at a glance
  var GAP_PX = 24;         // between the two images (style.css .pair gap)
  var FRAME_PX = 18;       // a choice button's padding and border, both sides (style.css)
  var trial = null;        // the trial on screen
  var receivedAt = 0;      // performance.now() when it arrived
  var shownAt = null;      // ... when its images were displayed
  var loadMs = null;
  var pointer = { x: -1, y: -1 }, freshAt = { x: -1, y: -1 };

  function setState(state) {
    app.setAttribute("data-state", state);
    app.classList.toggle("busy", state !== "ready");
  }

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

  // Nothing carries over from the previous trial: no focus (Space would press the focused
  // button), no hover highlight until the pointer moves (it may rest where the last click was).
  function clearHighlight() {
    if (document.activeElement && document.activeElement !== document.body) {
      document.activeElement.blur();
    }
    app.focus({ preventScroll: true });
    app.classList.add("fresh");
    freshAt = { x: pointer.x, y: pointer.y };
  }

  document.addEventListener("pointermove", function (e) {
    pointer = { x: e.clientX, y: e.clientY };
    if (Math.abs(pointer.x - freshAt.x) + Math.abs(pointer.y - freshAt.y) > 4) {
      app.classList.remove("fresh");
    }
  });

  // The images take what the question, prompt and controls leave of the window: side by side,
  // or one above the other where that makes them larger (a narrow portrait screen).
  function fit() {
    var stage = $("stage");
    var w = stage.clientWidth, h = stage.clientHeight, size;
    if (!trial) { return; }
    if (trial.kind === "pair") {
      var across = Math.min((w - GAP_PX) / 2, h) - FRAME_PX;
      var stacked = Math.min(w, (h - GAP_PX) / 2) - FRAME_PX;
      $("pair").classList.toggle("stacked", stacked > across);
      size = Math.max(across, stacked);
    } else {
      size = Math.min(w, h);
    }
    size = Math.floor(Math.max(48, Math.min(MAX_IMAGE_PX, size)));
    app.style.setProperty("--img", size + "px");
  }
  window.addEventListener("resize", fit);

  function render(t, progress) {
    trial = t; shownAt = null; loadMs = null; receivedAt = performance.now();
    setState("loading");
    setStatus("");
    clearHighlight();
    app.setAttribute("data-trial", t.id);
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
    $("pair").hidden = !pair; $("pair-controls").hidden = !pair;
    $("single").hidden = pair; $("scale").hidden = pair;
    if (pair) { $("choose-tie").hidden = !t.tie; } else { buildScale(t.scale); }
    fit();
    var loads = pair
      ? [showImage($("img-left"), t.images.left), showImage($("img-right"), t.images.right)]
      : [showImage($("img-single"), t.images.image)];
    Promise.all(loads).then(function () {
      // the next frame is the first one with the images painted
      window.requestAnimationFrame(function () {
        if (trial !== t) { return; }
        shownAt = performance.now();
        loadMs = Math.round((shownAt - receivedAt) * 10) / 10;
        setState("locked");
        window.setTimeout(function () {
          if (trial === t && app.getAttribute("data-state") === "locked") { setState("ready"); }
        }, t.min_display_ms || 0);
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
    if (!trial || app.getAttribute("data-state") !== "ready") { return; }
    setState("sending");
    var body = Object.assign({
      trial: trial.id,
      rt_ms: Math.round((performance.now() - shownAt) * 10) / 10,
      load_ms: loadMs
    }, fields);
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
      setState("ready");
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

  // A focused button answers Space (and Enter) itself, as every button does: Space means
  // "no preference" only when no button has the focus.
  function buttonFocused() {
    var el = document.activeElement;
    return !!el && el.tagName === "BUTTON";
  }

  document.addEventListener("keydown", function (e) {
    if (!trial || e.altKey || e.ctrlKey || e.metaKey) { return; }
    var fields = null;
    if (trial.kind === "pair") {
      if (e.key === "ArrowLeft") { fields = { choice: "left" }; }
      else if (e.key === "ArrowRight") { fields = { choice: "right" }; }
      else if (trial.tie && e.key === "ArrowDown") { fields = { choice: "tie" }; }
      else if (trial.tie && e.key === " " && !buttonFocused()) { fields = { choice: "tie" }; }
    } else {
      var v = Number(e.key);
      if (e.key.length === 1 && v >= trial.scale.min && v <= trial.scale.max) { fields = { rating: v }; }
    }
    if (!fields) { return; }
    e.preventDefault();
    if (!e.repeat) { submit(fields); }  // a held key answers once, then repeats nothing
  });

  load();
})();
