/* Log in: check the token with /ui/api/whoami, keep it in sessionStorage, go back. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const { el } = T;
  const main = document.getElementById("main");
  const params = new URLSearchParams(location.search);
  let next = params.get("next") || "/ui";
  if (!next.startsWith("/ui") || next.startsWith("//")) next = "/ui";

  const input = el("input", { id: "token", name: "token", type: "password", required: true,
    autocomplete: "current-password", spellcheck: "false", "aria-describedby": "token-help" });
  const error = el("p", { id: "login-error", className: "error", role: "alert" });
  const form = el("form", { className: "login panel", id: "login-form" },
    el("h1", null, "Log in"),
    el("label", { for: "token" }, "API token"),
    input,
    el("p", { id: "token-help", className: "help" },
      "An admin token can pause, resume, cancel and stop trials; a viewer token can only look. "
      + "The token stays in this tab (sessionStorage)."),
    error,
    el("button", { type: "submit", id: "login-submit" }, "Log in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    T.setText(error, "");
    const tok = input.value.trim();
    if (!tok) return;
    try {
      const me = await T.api("/ui/api/whoami", { token: tok });
      sessionStorage.setItem("tuner.token", tok);
      sessionStorage.setItem("tuner.role", me.role);
      location.assign(next);
    } catch (e) {
      T.setText(error, e.status === 401 ? "That token is unknown or revoked." : e.message);
      input.focus();
    }
  });
  main.replaceChildren(form);
  const who = document.getElementById("who");
  if (T.token()) {
    who.replaceChildren(el("button", { type: "button", className: "link", onclick: T.logout },
      "Log out"));
  }
  input.focus();
});
