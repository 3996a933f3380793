// Keyboard helpers every page's script shares.

// True when a key press goes to a text field (or other editable element), not to the page.
export function typingInto(target) {
  if (!(target instanceof Element)) {
    return false;
  }
  return target.isContentEditable || target.closest("input, textarea, select") !== null;
}
