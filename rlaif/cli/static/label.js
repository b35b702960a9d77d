// rlaif label: keyboard-first labelling of a run's pairs. Every piece of model text is set with textContent.
"use strict";

const TOKEN = document.querySelector('meta[name="rlaif-token"]').content;
const $ = (id) => document.getElementById(id);
let state = null;   // the server's state: total, done, labelled[], agree, decided, judged
let index = null;   // the pair on screen
let busy = false;   // one request at a time: a held key never labels twice

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (method === "POST") {
    options.headers["Content-Type"] = "application/json";
    options.headers["X-RLAIF-Token"] = TOKEN;
    options.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function setState(s) {
  state = s;
  $("run").textContent = `run ${s.run}`;
  $("labeller").textContent = `labeller ${s.labeller}`;
  $("progress").textContent = `${s.done} / ${s.total}`;
  $("agreement").textContent = s.judged
    ? `judge agrees with you on ${s.agree} of ${s.decided}` +
      " (pairs where you both picked a side)"
    : "this run has no judgments.jsonl: no judge verdicts to compare";
}

function nextUnlabelled(from) {
  for (let step = 1; step <= state.total; step++) {
    const j = (from + step) % state.total;
    if (!state.labelled[j]) return j;
  }
  return null;
}

async function show(i) {
  const pair = await api("GET", `/api/pair?index=${i}`);
  index = pair.index;
  $("pair-id").textContent = `pair ${pair.index + 1} of ${state.total} · ${pair.pair_id}`;
  $("prompt").textContent = pair.prompt;
  $("left").textContent = pair.left;
  $("right").textContent = pair.right;
  for (const id of ["left", "right", "prompt"]) $(id).scrollTop = 0;
  for (const c of ["left", "right", "tie"]) $(`b-${c}`).classList.toggle("chosen", pair.you === c);
  if (pair.you) $("last").textContent = `You chose ${pair.you} here; the judge: ${pair.judge}. Press 1, 2 or 3 to relabel.`;
  document.body.dataset.index = String(pair.index);
}

async function choose(choice) {
  const result = await api("POST", "/api/label", { index, choice });
  setState(result.state);
  const line = $("last");
  const decided = ["left", "right"].includes(result.judge) && choice !== "tie";
  const message = `Pair ${result.index + 1}: you chose ${choice}; the judge chose ${result.judge}.`;
  const next = nextUnlabelled(index);
  if (next !== null) await show(next);
  line.className = decided ? (result.judge === choice ? "agree" : "disagree") : "";
  line.textContent = next === null ? `${message} All ${state.total} pairs labelled; u undoes the last label.` : message;
}

async function skip() {
  const next = nextUnlabelled(index);
  if (next !== null && next !== index) await show(next);
}

async function undo() {
  const result = await api("POST", "/api/undo", {});
  setState(result.state);
  if (result.undone === null) { $("last").textContent = "Nothing to undo."; return; }
  if (result.index !== null) await show(result.index);
  $("last").className = "";
  $("last").textContent = result.index === null
    ? `Undid the label of ${result.undone} (not in this sample).`
    : result.you
      ? `Undid your relabel of pair ${result.index + 1}; your earlier choice, ${result.you}, is back.`
      : `Undid your label of pair ${result.index + 1}.`;
}

const ACTIONS = { left: () => choose("left"), right: () => choose("right"), tie: () => choose("tie"), skip, undo };
const KEYS = { "1": "left", "2": "right", "3": "tie", s: "skip", u: "undo" };

async function act(name) {
  if (busy || state === null) return;
  busy = true;
  document.body.dataset.busy = "1";
  $("error").textContent = "";
  try {
    await ACTIONS[name]();
  } catch (err) {
    $("error").textContent = `Not saved: ${err.message}`;
  } finally {
    busy = false;
    document.body.dataset.busy = "0";
  }
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const name = KEYS[event.key.toLowerCase()];
  if (!name) return;
  event.preventDefault();
  act(name);
});

for (const button of document.querySelectorAll("#buttons button")) {
  button.addEventListener("click", () => act(button.dataset.action));
}

(async () => {
  try {
    setState(await api("GET", "/api/state"));
    const first = state.labelled.indexOf(false);
    await show(first === -1 ? 0 : first);  // resume at the first pair this labeller has not labelled
    if (first === -1) $("last").textContent = `All ${state.total} pairs labelled; u undoes the last label.`;
    document.body.dataset.ready = "1";
  } catch (err) {
    $("error").textContent = `Cannot load: ${err.message}`;
  }
})();
