"""The page at ``GET /``: drop or pick images, see the top-k bars and the model card. One file, no CDN."""

from __future__ import annotations

__all__ = ["page_html"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tellapart</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #drop { border: 2px dashed #889; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; background: #fafaff; }
  #drop.over { background: #eef; border-color: #44a; }
  .result { display: flex; gap: 1rem; margin: 1rem 0; padding: .6rem; border: 1px solid #ddd; border-radius: 6px; }
  .result img { width: 96px; height: 96px; object-fit: contain; background: #f4f4f4; }
  .bars { flex: 1; }
  .row { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; }
  .row .name { width: 9rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .row .bar { flex: 1; background: #eee; height: 1rem; border-radius: 3px; }
  .row .fill { background: #46a; height: 100%; border-radius: 3px; }
  .row .pct { width: 4rem; text-align: right; font-variant-numeric: tabular-nums; }
  .top-label { font-weight: 600; }
  #error { color: #a22; white-space: pre-wrap; }
  table { border-collapse: collapse; } td { padding: .1rem .6rem .1rem 0; vertical-align: top; }
  .muted { color: #666; }
</style>
</head>
<body>
<h1>tellapart</h1>
<div class="muted" id="model">loading the model card&hellip;</div>
<p></p>
<div id="drop" tabindex="0">Drop images here, or click to pick them
  <input id="file" type="file" accept="image/*" multiple hidden>
</div>
<div id="error" role="alert"></div>
<div id="results"></div>
<h2 style="font-size:1.1rem">Model card</h2>
<table id="card"></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
let limits = {max_images: 32};

async function loadCard() {
  try {
    const r = await fetch("metadata");
    const m = await r.json();
    limits = m.limits || limits;
    $("model").textContent = m.model + " \\u00b7 " + m.architecture + " \\u00b7 " + m.classes.length + " classes";
    const p = m.preprocessing;
    const rows = [
      ["model", m.model], ["architecture", m.architecture], ["classes", m.classes.join(", ")],
      ["input", p.size + "\\u00d7" + p.size + (p.grayscale ? " grey" : " RGB") + ", fit " + p.fit],
      ["mean / std", p.mean.map((v) => v.toFixed(3)).join(", ") + " / " + p.std.map((v) => v.toFixed(3)).join(", ")],
      ["test accuracy", m.test ? (100 * m.test.accuracy).toFixed(2) + "% (95% CI " + (100 * m.test.accuracy_ci[0]).toFixed(2) + "\\u2013" + (100 * m.test.accuracy_ci[1]).toFixed(2) + "%, n=" + m.test.n + ")" : "not evaluated (run 'tellapart evaluate RUN')"],
      ["source", m.resolved || m.source],
    ];
    $("card").innerHTML = rows.map(([k, v]) => "<tr><td class='muted'>" + esc(k) + "</td><td>" + esc(v) + "</td></tr>").join("");
  } catch (e) {
    $("model").textContent = "could not read /metadata: " + e;
  }
}

function render(files, answer) {
  const out = $("results");
  out.innerHTML = "";
  answer.predictions.forEach((p, i) => {
    const div = document.createElement("div");
    div.className = "result";
    const img = document.createElement("img");
    img.alt = p.name;
    if (files[i]) img.src = URL.createObjectURL(files[i]);
    const bars = document.createElement("div");
    bars.className = "bars";
    bars.innerHTML = "<div><span class='top-label'>" + esc(p.label) + "</span> <span class='muted'>" + esc(p.name) + "</span></div>" +
      p.top_k.map((t) => "<div class='row'><span class='name'>" + esc(t.label) + "</span><span class='bar'><span class='fill' style='display:block;width:" +
        (100 * t.probability).toFixed(1) + "%'></span></span><span class='pct'>" + (100 * t.probability).toFixed(1) + "%</span></div>").join("");
    div.append(img, bars);
    out.append(div);
  });
}

async function send(fileList) {
  const files = Array.from(fileList).slice(0, limits.max_images);
  if (!files.length) return;
  $("error").textContent = "";
  const body = new FormData();
  files.forEach((f) => body.append("file", f, f.name));
  try {
    const r = await fetch("predict?top_k=5", {method: "POST", body});
    const answer = await r.json();
    if (!r.ok) { $("error").textContent = "HTTP " + r.status + ": " + (answer.error || JSON.stringify(answer)); return; }
    render(files, answer);
  } catch (e) {
    $("error").textContent = "request failed: " + e;
  }
}

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("file").addEventListener("change", (e) => send(e.target.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files); });
loadCard();
</script>
</body>
</html>
"""


def page_html() -> str:
    """The self-contained page (inline CSS and JavaScript; it talks only to this server)."""
    return _PAGE
