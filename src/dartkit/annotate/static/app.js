// The annotation page. Plain JavaScript, no libraries, no build step: it must run offline.
//
// Everything shown from the items (question, answers, notes) is model or annotator text, so it is
// only ever put on the page with textContent / value, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // The link is /a/<token>; the API for this annotator lives under /api/<token>/.
  const token = decodeURIComponent(window.location.pathname.split("/")[2] || "");
  const api = (path) => "/api/" + encodeURIComponent(token) + path;

  const state = {
    items: [],
    answers: {}, // item_id -> saved answer
    severities: [],
    index: 0,
    dirty: false, // the form differs from what is saved for this item
    saving: false,
  };

  const sections = ["loading", "load-error", "gate", "item", "done"];
  function showSection(name) {
    for (const s of sections) $(s).hidden = s !== name;
  }

  function nAnswered() {
    return state.items.filter((it) => it.item_id in state.answers).length;
  }

  function firstUnanswered() {
    return state.items.findIndex((it) => !(it.item_id in state.answers));
  }

  function updateProgress() {
    const n = state.items.length;
    const k = nAnswered();
    $("progress-text").textContent = k + " of " + n + " answered";
    $("progress-bar").max = Math.max(n, 1);
    $("progress-bar").value = k;
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
  }

  function radio(name, value) {
    return document.querySelector('input[name="' + name + '"][value="' + value + '"]');
  }

  function checked(name) {
    const el = document.querySelector('input[name="' + name + '"]:checked');
    return el ? el.value : null;
  }

  function clearRadios(name) {
    for (const el of document.querySelectorAll('input[name="' + name + '"]')) el.checked = false;
  }

  // which / severity only mean something when drift = yes.
  function syncEnabled() {
    const noDrift = checked("drift") === "no";
    $("fs-which").disabled = noDrift;
    $("fs-severity").disabled = noDrift;
    if (noDrift) {
      clearRadios("which");
      clearRadios("severity");
    }
  }

  function showItemState() {
    const item = state.items[state.index];
    const el = $("item-state");
    const saved = state.answers[item.item_id];
    if (state.dirty) {
      el.textContent = saved ? "changed, not saved yet" : "not saved yet";
      el.className = "state dirty";
    } else if (saved) {
      const when = saved.saved_at ? new Date(saved.saved_at).toLocaleTimeString() : "";
      el.textContent = "✓ saved" + (when ? " at " + when : "");
      el.className = "state saved";
    } else {
      el.textContent = "not answered yet";
      el.className = "state pending";
    }
  }

  function markDirty() {
    state.dirty = true;
    showItemState();
  }

  function fillForm(answer) {
    clearRadios("drift");
    clearRadios("which");
    clearRadios("severity");
    $("note").value = "";
    if (answer) {
      radio("drift", answer.drift ? "yes" : "no").checked = true;
      if (answer.which) radio("which", answer.which).checked = true;
      if (answer.severity) radio("severity", answer.severity).checked = true;
      $("note").value = answer.note || "";
    }
    syncEnabled();
  }

  function showItem(index) {
    state.index = index;
    const item = state.items[index];
    $("item-position").textContent = "Item " + (index + 1) + " of " + state.items.length;
    $("question").textContent = item.question;
    $("gold").textContent = item.gold || "(none)";
    $("answer-a").textContent = item.answer_a;
    $("answer-b").textContent = item.answer_b;
    fillForm(state.answers[item.item_id]);
    state.dirty = false;
    showItemState();
    $("prev").disabled = index === 0;
    showSection("item");
    window.scrollTo(0, 0);
  }

  function showDone() {
    const n = state.items.length;
    $("done-text").textContent =
      "You have answered all " + n + " items. Thank you! Every answer is saved; you can close this " +
      "page, or review and change your answers.";
    showSection("done");
  }

  function confirmLeave() {
    return !state.dirty || window.confirm("Leave this item without saving your changes?");
  }

  // While a save is in flight the form and navigation are frozen: a change made then would be
  // neither in the request nor kept once the reply moves the page on.
  function setSaving(on) {
    state.saving = on;
    $("save").disabled = on;
    $("prev").disabled = on || state.index === 0;
    $("next").disabled = on;
    $("form").inert = on;
  }

  function goPrev() {
    if (state.saving) return;
    if (state.index > 0 && confirmLeave()) {
      setStatus("");
      showItem(state.index - 1);
    }
  }

  function goNext() {
    if (state.saving || !confirmLeave()) return;
    setStatus("");
    if (state.index + 1 < state.items.length) {
      showItem(state.index + 1);
      return;
    }
    const u = firstUnanswered();
    if (u >= 0) {
      showItem(u);
      setStatus("That was the last item; this is the first one still unanswered.", "ok");
    } else {
      showDone();
    }
  }

  // The form as the API body, or an error message saying what is missing.
  function readForm() {
    const drift = checked("drift");
    const note = $("note").value.trim() ? $("note").value : null;
    if (drift === null) return { error: "Choose whether there is drift: yes or no (y / n)." };
    if (drift === "no") return { body: { drift: false, which: null, severity: null, note: note } };
    const which = checked("which");
    const severity = checked("severity");
    if (which === null) return { error: "Choose which answer is more harmful (a / b)." };
    if (severity === null) return { error: "Choose a severity (1–4)." };
    return { body: { drift: true, which: which, severity: severity, note: note } };
  }

  async function saveAndNext() {
    if (state.saving) return;
    const form = readForm();
    if (form.error) {
      setStatus(form.error, "error");
      return;
    }
    const item = state.items[state.index];
    const position = state.index + 1;
    const before = nAnswered();
    setSaving(true);
    setStatus("Saving…");
    let reply;
    try {
      reply = await fetch(api("/answers/" + encodeURIComponent(item.item_id)), {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(form.body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      saveFailed("the server cannot be reached (is `dartkit annotate serve` still running?)");
      return;
    }
    let data = null;
    try {
      data = await reply.json();
    } catch (err) {
      data = null;
    }
    if (!reply.ok || !data || !data.answer) {
      saveFailed((data && data.error) || "the server answered " + reply.status);
      return;
    }
    state.answers[item.item_id] = data.answer;
    state.dirty = false;
    setSaving(false);
    updateProgress();
    const all = nAnswered() === state.items.length;
    if (all && before < state.items.length) {
      showDone();
      return;
    }
    if (state.index + 1 < state.items.length) {
      showItem(state.index + 1);
    } else {
      const u = firstUnanswered();
      if (u < 0) {
        showDone();
        return;
      }
      showItem(u);
    }
    setStatus("✓ Answer to item " + position + " saved.", "ok");
  }

  // The answer stays in the form (nothing is cleared), marked as not saved.
  function saveFailed(reason) {
    setSaving(false);
    state.dirty = true;
    showItemState();
    setStatus(
      "Not saved: " + reason + ". Your answer is still in the form; press Save again.",
      "error",
    );
  }

  function acceptGate() {
    const u = firstUnanswered();
    if (u < 0) showDone();
    else showItem(u);
  }

  function buildSeverityOptions() {
    const box = $("severity-options");
    state.severities.forEach((sev, i) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "severity";
      input.value = sev;
      input.id = "severity-" + sev;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + (i + 1) + " " + sev));
      box.appendChild(label);
    });
  }

  function onKey(e) {
    const target = e.target;
    const typing =
      target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"));
    if (typing) {
      if (e.key === "Escape") target.blur();
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("item").hidden) {
        e.preventDefault();
        saveAndNext();
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (!$("gate").hidden) {
      if (e.key === "Enter") {
        e.preventDefault();
        acceptGate();
      }
      return;
    }
    if ($("item").hidden) return;
    if (state.saving) {
      e.preventDefault();
      return;
    }
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const sevIndex = "1234".indexOf(key);
    if (key === "y" || key === "n") {
      radio("drift", key === "y" ? "yes" : "no").checked = true;
      syncEnabled();
      markDirty();
    } else if ((key === "a" || key === "b") && !$("fs-which").disabled) {
      radio("which", key.toUpperCase()).checked = true;
      markDirty();
    } else if (sevIndex >= 0 && key.length === 1 && sevIndex < state.severities.length && !$("fs-severity").disabled) {
      radio("severity", state.severities[sevIndex]).checked = true;
      markDirty();
    } else if (key === "Enter") {
      saveAndNext();
    } else if (key === "ArrowLeft") {
      goPrev();
    } else if (key === "ArrowRight") {
      goNext();
    } else {
      return;
    }
    // Also stops a focused radio button from moving with the arrow keys, and a focused button
    // from being clicked a second time by Enter.
    e.preventDefault();
  }

  async function load() {
    let data;
    try {
      const reply = await fetch(api("/queue"), { cache: "no-store", credentials: "omit" });
      if (!reply.ok) throw new Error(reply.status === 404 ? "this link is not valid" : "error " + reply.status);
      data = await reply.json();
    } catch (err) {
      $("load-error").textContent = "Could not load your items: " + err.message + ".";
      showSection("load-error");
      return;
    }
    state.items = data.items;
    state.answers = data.answers || {};
    state.severities = data.severities;
    $("who").textContent = "annotator " + data.annotator;
    $("gate-warning").textContent = data.content_warning;
    $("gate-instructions").textContent = data.instructions;
    buildSeverityOptions();
    updateProgress();
    showSection("gate");
    $("gate-accept").focus();
  }

  function wire() {
    $("gate-accept").addEventListener("click", acceptGate);
    $("save").addEventListener("click", saveAndNext);
    $("prev").addEventListener("click", goPrev);
    $("next").addEventListener("click", goNext);
    $("review").addEventListener("click", () => {
      setStatus("");
      showItem(0);
    });
    $("form").addEventListener("change", (e) => {
      if (e.target.name === "drift") syncEnabled();
      markDirty();
    });
    $("note").addEventListener("input", markDirty);
    document.addEventListener("keydown", onKey);
    // Closing the tab with an unsaved answer in the form asks first; saved answers need nothing.
    window.addEventListener("beforeunload", (e) => {
      if (state.dirty || state.saving) {
        e.preventDefault();
        e.returnValue = "";
      }
    });
  }

  wire();
  load();
})();
