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
