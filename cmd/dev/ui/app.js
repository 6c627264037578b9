// The dev portal: a hash router over the portal's pages and the ops console. Plain ES modules,
// no build step, no inline script (the page's CSP forbids it).
import { h, replace, announce } from "./dom.js";
import { session, call } from "./api.js";
import { welcome, account, tickets, ticket, newTicket, billing } from "./portal.js";
import { ops } from "./ops.js";

const main = document.getElementById("main");
let world = null;
let stop = null; // the current page's cleanup (its refresh timer)

const routes = [
  { re: /^#?\/?$/, view: welcome, title: "Welcome", nav: null, open: true },
  { re: /^#\/account$/, view: account, title: "Account", nav: "#/account" },
  { re: /^#\/tickets$/, view: tickets, title: "Tickets", nav: "#/tickets" },
  { re: /^#\/tickets\/new$/, view: newTicket, title: "New ticket", nav: "#/tickets/new" },
  { re: /^#\/tickets\/([^/?]+)$/, view: ticket, title: "Ticket", nav: "#/tickets" },
  { re: /^#\/billing(\?.*)?$/, view: billing, title: "Plan and billing", nav: "#/billing" },
  { re: /^#\/ops$/, view: ops, title: "Ops console", nav: "#/ops", open: true },
];

function renderSession() {
  const box = document.getElementById("session");
  const u = session.user;
  if (!u) {
    replace(box, h("a", { href: "#/" }, "Sign in"));
    return;
  }
  const parts = [h("span", {}, "Signed in as ", h("strong", {}, u.name))];
  if (u.memberships.length > 1) {
    const pick = h("select", { id: "tenant-picker", on: { change: (e) => {
      session.tenantId = e.target.value;
      announce(`Now acting for ${e.target.selectedOptions[0].textContent}`);
      render();
    } } }, u.memberships.map((m) => h("option", { value: m.tenant_id, selected: m.tenant_id === session.tenantId },
      `${m.tenant_name} (${m.role})`)));
    parts.push(h("label", { for: "tenant-picker" }, "Company"), pick);
  } else {
    parts.push(h("span", {}, `${u.memberships[0].tenant_name} (${u.memberships[0].role})`));
  }
  parts.push(h("button", { type: "button", class: "secondary", id: "sign-out", on: { click: () => {
    session.signOut();
    announce("Signed out");
    location.hash = "#/";
    renderSession();
  } } }, "Sign out"));
  replace(box, parts);
}

async function render() {
  if (stop) { stop(); stop = null; }
  if (!world) {
    const r = await call("/_dev/world", { auth: false });
    if (!r.ok) {
      replace(main, h("h1", {}, "The dev server did not answer"), h("p", { class: "alert", role: "alert" }, "Reload the page once make dev runs."));
      return;
    }
    world = r.data;
  }
  renderSession();
  const hash = location.hash || "#/";
  const route = routes.find((r) => r.re.test(hash));
  for (const a of document.querySelectorAll("#nav a")) {
    if (route && a.getAttribute("href") === route.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!route) {
    document.title = "Not found · Client portal";
    replace(main, h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, h("a", { href: "#/" }, "Back to the start")));
    return;
  }
  if (!route.open && !session.token) {
    document.title = "Sign in · Client portal";
    const view = welcome({ world, next: hash });
    replace(main, view.node);
    return;
  }
  document.title = `${route.title} · Client portal`;
  const match = hash.match(route.re);
  const view = route.view({ world, param: match[1], rerender: render });
  stop = view.stop || null;
  replace(main, view.node);
  const heading = main.querySelector("h1");
  if (heading && navigated) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

let navigated = false;
window.addEventListener("hashchange", () => { navigated = true; render(); });
render();
