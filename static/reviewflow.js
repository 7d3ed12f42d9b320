// Tell the server the browser's timezone, so publish times are read and shown in it.
(function () {
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && document.cookie.indexOf("tz=" + encodeURIComponent(tz)) === -1) {
      document.cookie = "tz=" + encodeURIComponent(tz) + "; path=/; SameSite=Lax; max-age=31536000";
    }
  } catch (e) { /* an old browser: the server's timezone is used */ }
})();

// Editor: an "Insert this mention" button of the live checks (templates/approvals/partials/
// findings.html) appends its data-insert text to the field named by data-insert-into, then
// tells HTMX the text changed so the preview and the checks run again. No inline script: one
// listener on the document serves the buttons of every preview swapped in.
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("button[data-insert]");
  if (!button) return;
  var field = document.getElementById(button.getAttribute("data-insert-into") || "id_text");
  var mention = (button.getAttribute("data-insert") || "").trim();
  if (!field || !mention) return;
  var text = field.value.replace(/\s+$/, "");
  if (text.indexOf(mention) === -1) {
    field.value = text ? text + "\n\n" + mention : mention;
  }
  field.focus();
  field.dispatchEvent(new Event("input", { bubbles: true }));
});
