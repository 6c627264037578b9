// DOM helpers. Every string from the API goes into the page as a text node (textContent),
// never as HTML: ticket subjects and bodies are user content.

// h builds an element: h("p", {class: "meta"}, "text", child, ...). Strings and numbers become
// text nodes; null, undefined and false are skipped; arrays are flattened. Attributes are set
// with setAttribute (on* handlers are refused: listeners go through the `on` key).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") {
      for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    } else if (key.startsWith("on")) {
      throw new Error("use the `on` key for listeners");
    } else if (key === "text") {
      el.textContent = String(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace swaps an element's children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// announce tells screen readers something that happened (the page's polite live region).
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A new text node after a tick, so the same message twice is announced twice.
  setTimeout(() => { region.textContent = message; }, 50);
}

let ids = 0;
// uid makes an element id for label/aria wiring.
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

// when formats an ISO time for people, in their locale; "" for null.
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// money formats an amount in the currency's smallest unit.
export function money(minor, currency) {
  if (minor === null || minor === undefined || !currency) return "";
  const zero = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
  const value = zero.includes(currency.toLowerCase()) ? minor : minor / 100;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(value);
  } catch {
    return `${value} ${currency.toUpperCase()}`;
  }
}

// bytes formats a file size.
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// table builds a keyboard-scrollable table: a labelled region that takes focus, so a table
// wider than a phone can be scrolled without a mouse.
export function table(label, headers, rows) {
  return h("div", { class: "scroll", role: "region", "aria-label": label, tabindex: "0" },
    h("table", {},
      h("caption", { class: "visually-hidden" }, label),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}
