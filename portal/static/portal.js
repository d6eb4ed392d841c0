// Small behaviours without inline script: copy buttons (data-copy="<selector>").
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.innerText).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// Provider tiles: arrow keys move the focus between tiles (Tab and Enter work as links).
document.addEventListener("keydown", (event) => {
  const tile = event.target.closest && event.target.closest(".provider-tile");
  const step = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1}[event.key];
  if (!tile || !step) return;
  const tiles = Array.from(tile.parentElement.querySelectorAll(".provider-tile"));
  const next = tiles[tiles.indexOf(tile) + step];
  if (next) {
    next.focus();
    event.preventDefault();
  }
});

// What a person typed or chose in a live filter form before htmx had wired the page up
// (a slow network holds the deferred scripts back, the field is already there) would
// otherwise be lost: htmx takes the value it finds at start-up as the last one, so a
// replayed input event counts as "unchanged". Submit such a form once instead; every
// live filter form also triggers on submit. This runs after htmx's own DOMContentLoaded
// handler, as portal.js is the last deferred script.
function fieldChanged(field) {
  if (!["INPUT", "SELECT", "TEXTAREA"].includes(field.tagName)
      || ["hidden", "submit", "button", "reset", "image", "file"].includes(field.type)) {
    return false;  // buttons and hidden fields are not something a person typed into
  }
  if (field.tagName === "SELECT") {
    // A select with no `selected` attribute shows its first option by default.
    const initial = Array.from(field.options).findIndex((option) => option.defaultSelected);
    return field.selectedIndex !== Math.max(0, initial);
  }
  if (field.type === "checkbox" || field.type === "radio") {
    return field.checked !== field.defaultChecked;
  }
  return field.value !== field.defaultValue;
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[hx-get]").forEach((form) => {
    if (Array.from(form.elements).some(fieldChanged)) form.requestSubmit();
  });
});

// Inline edits (fields marked data-inline-edit): Escape cancels; Enter saves a one-line
// field, while in a textarea (a description has several lines) Enter starts a new line
// and Ctrl+Enter or Cmd+Enter saves, as its Save button does. htmx's trigger filters (keyup[key=='Escape'])
// would need eval, which the Content-Security-Policy forbids, so the keys are turned
// into a submit of the field's form and an "edit-cancel" event its hx-trigger waits for.
document.addEventListener("keydown", (event) => {
  const field = event.target.closest && event.target.closest("[data-inline-edit]");
  if (!field || event.isComposing) return;
  if (event.key === "Escape") {
    event.preventDefault();
    field.dispatchEvent(new CustomEvent("edit-cancel", {bubbles: true}));
  } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)
             && field.tagName === "TEXTAREA") {
    event.preventDefault();
    if (field.form) field.form.requestSubmit();
  }
});

// A checkbox with a hidden twin of the same name (its "off" value, sent when the box is
// clear): while the box is ticked the twin is disabled, so the form sends one value
// (completed=1, not completed=0&completed=1). Kept in step on every change, before htmx
// reads the form (capture phase), and whenever htmx puts new content on the page.
function pairCheckboxes(root) {
  const boxes = root.querySelectorAll ? root.querySelectorAll("input[type=checkbox][name]") : [];
  boxes.forEach((box) => {
    if (!box.form) return;
    Array.from(box.form.elements).forEach((field) => {
      if (field.type === "hidden" && field.name === box.name) field.disabled = box.checked;
    });
  });
}

document.addEventListener("change", (event) => {
  if (event.target.type === "checkbox" && event.target.form) pairCheckboxes(event.target.form);
}, true);
document.addEventListener("htmx:load", (event) => pairCheckboxes(event.target));

// Progress bars carry their width as data-progress: the CSP allows no inline style
// attribute, but setting a style through the DOM is allowed.
function sizeProgressBars(root) {
  const scope = root && root.querySelectorAll ? root : document;
  const bars = Array.from(scope.querySelectorAll("[data-progress]"));
  if (scope.matches && scope.matches("[data-progress]")) bars.push(scope);
  bars.forEach((bar) => { bar.style.width = `${Number(bar.dataset.progress) || 0}%`; });
}
document.addEventListener("htmx:load", (event) => sizeProgressBars(event.target));
document.addEventListener("DOMContentLoaded", () => sizeProgressBars(document));

// Relative times (<time class="when">, portal/ui.py time_tag) stay true in a page left
// open: every 30 s their words are worked out again from the instant in `datetime`, in
// the person's zone (body data-timezone), worded as relative_time in portal/ui.py does.
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const zoneFormats = {};

function localParts(date, zone) {
  if (!zoneFormats[zone]) {
    zoneFormats[zone] = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, year: "numeric", month: "numeric", day: "numeric",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  }
  const parts = {};
  zoneFormats[zone].formatToParts(date).forEach((part) => { parts[part.type] = part.value; });
  return parts;
}

function relativeTime(date, now, zone) {
  const seconds = (date - now) / 1000;
  const ahead = seconds > 0;
  const distance = Math.abs(seconds);
  if (distance < 45) return "just now";
  const minutes = Math.max(1, Math.round(distance / 60));
  if (minutes < 60) return ahead ? `in ${minutes} min` : `${minutes} min ago`;
  const local = localParts(date, zone);
  const today = localParts(now, zone);
  const days = Math.round((Date.UTC(local.year, local.month - 1, local.day)
                           - Date.UTC(today.year, today.month - 1, today.day)) / 86400000);
  const clock = `${local.hour}:${local.minute}`;
  if (days === 0) {
    const hours = Math.floor(distance / 3600);
    return ahead ? `in ${hours} h` : `${hours} h ago`;
  }
  if (days === 1 || days === -1) return `${ahead ? "tomorrow" : "yesterday"} ${clock}`;
  const day = `${Number(local.day)} ${MONTHS[local.month - 1]}`;
  return local.year === today.year ? `${day} ${clock}` : `${day} ${local.year}`;
}

function refreshTimes() {
  const zone = document.body.dataset.timezone || "UTC";
  const now = new Date();
  document.querySelectorAll("time.when[datetime]").forEach((element) => {
    const date = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) return;
    const words = relativeTime(date, now, zone);
    if (element.textContent !== words) element.textContent = words;
  });
}
setInterval(refreshTimes, 30_000);

// Select-all boxes (data-select-all="<selector of the row boxes>"): ticking one ticks every
// row box it names (the rows on this page); a row box ticked or cleared shows on it as all,
// none or some (indeterminate).
function syncSelectAll(root) {
  const scope = root && root.querySelectorAll ? root : document;
  const all = Array.from(scope.querySelectorAll("[data-select-all]"));
  if (scope.matches && scope.matches("[data-select-all]")) all.push(scope);
  all.forEach((box) => {
    const rows = Array.from(document.querySelectorAll(box.dataset.selectAll));
    const ticked = rows.filter((row) => row.checked).length;
    box.checked = rows.length > 0 && ticked === rows.length;
    box.indeterminate = ticked > 0 && ticked < rows.length;
  });
}

document.addEventListener("change", (event) => {
  const box = event.target;
  if (box.matches && box.matches("[data-select-all]")) {
    const want = box.checked;
    document.querySelectorAll(box.dataset.selectAll).forEach((row) => { row.checked = want; });
    syncSelectAll(document);
  } else if (box.type === "checkbox") {
    syncSelectAll(document);
  }
});
document.addEventListener("htmx:load", () => syncSelectAll(document));

// A bar (the job list's bulk question, .bulk-bar) closes with Escape, as its Close or
// Cancel button (data-bar-close) does; the focus goes back to the list's bulk buttons.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.isComposing) return;
  const bar = event.target.closest && event.target.closest(".bulk-bar");
  const close = bar && bar.querySelector("[data-bar-close]");
  if (!close) return;
  event.preventDefault();
  close.click();
  const toolbar = document.querySelector("#bulk-actions button");
  if (toolbar) toolbar.focus();
});

// A file over the upload limit (data-max-bytes) is not sent: the field says so at once, in
// the server's own words (data-too-large). A very large upload would otherwise be cut off
// before the server could answer, and the person would see nothing.
document.addEventListener("htmx:confirm", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.type !== "file" || !input.dataset.maxBytes) return;
  const file = input.files && input.files[0];
  if (!file || file.size <= Number(input.dataset.maxBytes)) return;
  event.preventDefault();
  input.value = "";
  input.classList.add("is-invalid");
  let error = document.getElementById(`${input.id}-error`);
  if (!error) {
    error = document.createElement("div");
    error.id = `${input.id}-error`;
    error.className = "invalid-feedback d-block";
    const note = document.getElementById(`${input.id}-note`);
    (note || input).after(error);
  }
  error.textContent = input.dataset.tooLarge;
  const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  if (!described.includes(error.id)) input.setAttribute("aria-describedby", [...described, error.id].join(" "));
});
