// The portal's pages: welcome and sign-in, account, tickets (list, detail, new) and plan and
// billing. Each returns {node, stop}: the page and the cleanup of its refresh timer.
import { h, replace, announce, uid, when, money, bytes, table } from "./dom.js";
import { session, call, problemText } from "./api.js";

const STATUS_WORDS = {
  none: "No subscription yet",
  incomplete: "Waiting for the first payment",
  incomplete_expired: "Checkout expired",
  trialing: "Trial",
  active: "Active",
  past_due: "Past due",
  canceled: "Cancelled",
  unpaid: "Unpaid",
  paused: "Paused",
};

const ROLE_WORDS = { owner: "owner", admin: "admin", member: "member" };

// statusWords is the billing status in words, with the API's sentence when it adds to them
// ("payment failed; please update your payment method"), not when it repeats them.
function statusWords(b) {
  const words = STATUS_WORDS[b.status] || b.status;
  const msg = (b.message || "").trim();
  const plain = (s) => s.toLowerCase().replace(/^subscription /, "").replace(/[.;]/g, "");
  return { words, extra: msg && plain(msg) !== plain(words) ? msg : "" };
}

const INTEGRATION_WORDS = { crm: "CRM (HubSpot)", helpdesk: "Helpdesk (Zendesk)" };

function tenantName() {
  const m = session.membership;
  return m ? m.tenant_name : "";
}

// ---------- welcome and sign-in ----------

export function welcome({ world, next }) {
  const err = h("p", { class: "error", id: "signin-error", "aria-live": "assertive" });
  const choices = world.users.map((u, i) => {
    const id = `user-${u.id}`;
    const roles = u.memberships.map((m) => `${m.role} of ${m.tenant_name}`).join(" and ");
    return h("div", { class: "choice" },
      h("input", { type: "radio", name: "user", id, value: u.id, checked: i === 0 }),
      h("label", { for: id }, h("strong", {}, u.name), ` (${u.email}): ${roles}`));
  });
  const button = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const form = h("form", { id: "signin-form", novalidate: true, on: { submit: async (e) => {
    e.preventDefault();
    const picked = form.querySelector("input[name=user]:checked");
    button.disabled = true;
    const r = await call("/_dev/sign-in", { method: "POST", body: { user_id: picked.value }, auth: false });
    button.disabled = false;
    if (!r.ok) {
      err.textContent = problemText(r);
      return;
    }
    const user = world.users.find((u) => u.id === picked.value);
    session.signIn(r.data.access_token, user);
    announce(`Signed in as ${user.name}`);
    location.hash = next && next !== "#/" ? next : "#/account";
  } } },
    h("fieldset", { "aria-describedby": "signin-error" },
      h("legend", {}, "Sign in as one of the seeded people"),
      choices),
    err,
    button);

  const signedIn = session.user;
  const node = h("div", {},
    h("h1", {}, next && next !== "#/" ? "Sign in to continue" : "Your client portal, running on this machine"),
    h("p", { class: "lead" },
      "This is ", h("code", {}, "make dev"), ": the API your customers' portal calls, served by the very handlers AWS Lambda runs, ",
      "with local stand-ins for Stripe, HubSpot, Zendesk and Supabase. Click through the journey: sign in, pay, ",
      "see the account update, file a ticket and watch it reach the helpdesk, then switch a provider off and see that nothing is lost."),
    h("div", { class: "grid two" },
      h("section", { class: "card", "aria-labelledby": "try-heading" },
        h("h2", { id: "try-heading" }, "Try this"),
        h("ol", {},
          h("li", {}, "Sign in as Dana Owner (this dev server mints the token Supabase Auth would issue)."),
          h("li", {}, h("a", { href: "#/billing" }, "Plan and billing"), ": start a checkout (stripe-mock) and complete the payment with a signed Stripe event."),
          h("li", {}, h("a", { href: "#/account" }, "Account"), ": the billing status in words, and what is still syncing."),
          h("li", {}, h("a", { href: "#/tickets/new" }, "New ticket"), ": file one with an attachment; it is uploaded straight to Storage."),
          h("li", {}, h("a", { href: "#/ops" }, "Ops console"), ": switch HubSpot down, replay Stripe events, requeue dead letters, and see what HubSpot and Zendesk received."))),
      h("section", { class: "card", "aria-labelledby": "signin-heading" },
        h("h2", { id: "signin-heading" }, signedIn ? `Signed in as ${signedIn.name}` : "Sign in"),
        signedIn ? h("p", {}, "Pick someone else to switch user, or go to ", h("a", { href: "#/account" }, "your account"), ".") : null,
        form)));
  return { node };
}

// ---------- account ----------

// notices turns GET /v1/account into what the account page says is happening, in the words
// the portal promises: "payment received but syncing", "support ticket pending", "CRM update
// failed, we are retrying".
export function notices(a) {
  const out = [];
  const crm = a.syncs.find((s) => s.integration === "crm") || { state: "idle" };
  const desk = a.syncs.find((s) => s.integration === "helpdesk") || { state: "idle" };
  const paid = a.billing.last_payment_at;
  if (crm.state === "pending") {
    if (paid && (!crm.last_success_at || paid >= crm.last_success_at)) {
      out.push({ cls: "pending", title: "Payment received but syncing", text: "Your payment is recorded; the CRM is being updated." });
    } else {
      out.push({ cls: "pending", title: "Syncing to the CRM", text: crm.message });
    }
  } else if (crm.state === "retrying") {
    out.push({ cls: "retrying", title: "CRM update failed, we are retrying", text: "Nothing is lost: the update is retried until the CRM accepts it." });
  } else if (crm.state === "failed") {
    out.push({ cls: "failed", title: "CRM update failed", text: crm.message });
  }
  if (desk.state === "pending") {
    out.push({ cls: "pending", title: "Support ticket pending", text: `${desk.waiting} ticket(s) on the way to the helpdesk.` });
  } else if (desk.state === "retrying") {
    out.push({ cls: "retrying", title: "Support ticket delivery failed, we are retrying", text: "Your ticket is stored; it reaches the helpdesk as soon as it answers." });
  } else if (desk.state === "failed") {
    out.push({ cls: "failed", title: "A support ticket could not be delivered", text: desk.message });
  }
  if (out.length === 0) {
    out.push({ cls: "ok", title: "Everything is up to date", text: `${crm.message || "CRM idle"}; ${desk.message || "helpdesk idle"}.` });
  }
  return out;
}

export function account() {
  const heading = h("h1", {}, `Account: ${tenantName()}`);
  const content = h("div", { "aria-busy": "true" }, h("p", { class: "loading" }, "Loading the account…"));
  const live = h("ul", { class: "notices", id: "notices", "aria-live": "polite" });
  let last = "";
  let lastNotices = "";
  async function load() {
    const r = await call("/v1/account");
    const key = JSON.stringify(r);
    if (key === last) return;
    last = key;
    content.removeAttribute("aria-busy");
    if (!r.ok) {
      replace(content, h("p", { class: "alert", role: "alert" }, problemText(r)));
      return;
    }
    const a = r.data;
    heading.textContent = `Account: ${a.tenant.name}`;
    const b = a.billing;
    // The live region changes only when what it says changes, so a screen reader hears a new
    // state once, not every refresh.
    const now = notices(a);
    const said = JSON.stringify(now);
    if (said !== lastNotices) {
      lastNotices = said;
      replace(live, now.map((n) => h("li", { class: `notice ${n.cls}` }, h("strong", {}, n.title), n.text)));
    }
    const facts = [
      ["Plan", b.plan || "none"],
      ["Renews or ends", b.current_period_end ? `${when(b.current_period_end)}${b.cancel_at_period_end ? " (cancels then)" : ""}` : "—"],
      ["Last payment", b.last_payment_at ? `${money(b.last_payment_amount, b.last_payment_currency)} on ${when(b.last_payment_at)}` : "none yet"],
      ["Last failed payment", b.last_failure_at ? when(b.last_failure_at) : "none"],
      ["Your role", ROLE_WORDS[a.role] || a.role],
    ];
    const parts = [
      h("section", { class: "card", "aria-labelledby": "billing-heading" },
        h("h2", { id: "billing-heading" }, "Billing"),
        h("p", { class: "status", id: "billing-status" }, statusWords(b).words),
        statusWords(b).extra ? h("p", { id: "billing-message" }, statusWords(b).extra) : null,
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      h("section", { class: "card", "aria-labelledby": "syncs-heading" },
        h("h2", { id: "syncs-heading" }, "Syncs"),
        h("dl", { class: "facts" }, a.syncs.map((s) => [
          h("dt", {}, INTEGRATION_WORDS[s.integration] || s.integration),
          h("dd", {}, s.message, s.last_success_at ? ` (last success ${when(s.last_success_at)})` : "")]))),
    ];
    if (a.health) {
      parts.push(h("section", { class: "card", "aria-labelledby": "health-heading" },
        h("h2", { id: "health-heading" }, "Delivery health, last 24 hours"),
        h("p", {}, `Stripe events about you: ${a.health.webhook.received} received, ${a.health.webhook.processed} applied.`),
        table("Pushes per integration", ["Integration", "Attempts", "Failures", "Waiting", "Dead letters"],
          a.health.integrations.map((i) => [INTEGRATION_WORDS[i.integration] || i.integration, i.attempts, i.failures, i.pending, i.dead_letters]))));
    }
    replace(content, parts);
  }
  load();
  const timer = setInterval(load, 2000);
  const node = h("div", {},
    heading,
    h("section", { "aria-labelledby": "now-heading" }, h("h2", { id: "now-heading" }, "What is happening now"), live),
    content,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "refresh-account", on: { click: () => { last = ""; load(); announce("Account refreshed"); } } }, "Refresh")));
  return { node, stop: () => clearInterval(timer) };
}

// ---------- tickets ----------

function ticketItem(t) {
  return h("li", {},
    h("a", { href: `#/tickets/${encodeURIComponent(t.id)}` }, t.subject),
    h("p", { class: "meta" }, `${t.status_message} · ${t.category} · ${when(t.created_at)}`,
      t.attachments.length ? ` · ${t.attachments.length} attachment(s)` : ""));
}

export function tickets() {
  const list = h("ul", { class: "tickets", id: "ticket-list" });
  const status = h("p", { class: "loading" }, "Loading tickets…");
  const error = h("p", { class: "alert", id: "tickets-error", role: "alert" });
  const more = h("button", { type: "button", class: "secondary", id: "more-tickets", hidden: true }, "Show more tickets");
  let cursor = null;
  async function page() {
    more.disabled = true;
    const q = cursor ? `?limit=10&cursor=${encodeURIComponent(cursor)}` : "?limit=10";
    const r = await call(`/v1/tickets${q}`);
    more.disabled = false;
    if (!r.ok) {
      replace(status, "The tickets could not be loaded.");
      error.textContent = problemText(r);
      return;
    }
    error.textContent = "";
    const before = list.children.length;
    for (const t of r.data.tickets) list.appendChild(ticketItem(t));
    cursor = r.data.next_cursor;
    more.hidden = !cursor;
    if (list.children.length === 0) {
      replace(status, "No tickets yet. ", h("a", { href: "#/tickets/new" }, "File the first one"), ".");
    } else {
      replace(status, `${list.children.length} ticket(s) shown${cursor ? "; more below" : ""}.`);
    }
    if (before > 0) {
      const first = list.children[before]?.querySelector("a");
      if (first) first.focus();
      announce(`${list.children.length - before} more ticket(s) loaded`);
    }
  }
  more.addEventListener("click", page);
  page();
  return { node: h("div", {},
    h("h1", {}, `Tickets of ${tenantName()}`),
    h("p", {}, h("a", { href: "#/tickets/new", class: "button" }, "File a new ticket")),
    h("div", { role: "status", class: "meta", id: "tickets-status" }, status),
    error,
    list,
    h("div", { class: "actions" }, more)) };
}

export function ticket({ param }) {
  const node = h("div", {}, h("h1", {}, "Ticket"), h("p", { class: "loading", "aria-busy": "true" }, "Loading the ticket…"));
  (async () => {
    const r = await call(`/v1/tickets/${encodeURIComponent(decodeURIComponent(param))}`);
    if (r.status === 404) {
      replace(node,
        h("h1", { id: "not-found", tabindex: "-1" }, "Ticket not found"),
        h("p", {}, `There is no ticket with this id in ${tenantName()}. It may belong to another company, or the link is wrong.`),
        h("p", {}, h("a", { href: "#/tickets" }, "Back to your tickets")));
      node.querySelector("h1").focus();
      announce("Ticket not found");
      return;
    }
    if (!r.ok) {
      replace(node, h("h1", {}, "Ticket"), h("p", { class: "alert", role: "alert" }, problemText(r)));
      return;
    }
    const t = r.data;
    replace(node,
      h("h1", { tabindex: "-1" }, t.subject),
      h("dl", { class: "facts card" },
        [["Status", t.status_message], ["Category", t.category], ["Priority", t.priority],
          ["Filed", when(t.created_at)], ["Source", t.source === "portal" ? "the portal" : "a failed payment"]]
          .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h2", {}, "Message"),
      h("div", { class: "body", id: "ticket-body" }, t.body),
      h("h2", {}, "Attachments"),
      t.attachments.length
        ? h("ul", { id: "ticket-attachments" }, t.attachments.map((a) => h("li", {}, `${a.name} (${a.content_type}, ${bytes(a.size)})`)))
        : h("p", {}, "No attachments."),
      h("p", {}, h("a", { href: "#/tickets" }, "Back to your tickets")));
  })();
  return { node };
}

const ACCEPTED = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain", "text/csv",
  "application/zip", "application/json",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"];
const MAX_FILES = 5;
const MAX_BYTES = 10 * 1024 * 1024;

// field builds a labelled control with its hint and error, wired with aria-describedby.
function field(id, label, control, hint) {
  const errId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  control.id = id;
  control.setAttribute("aria-describedby", [hintId, errId].filter(Boolean).join(" "));
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    hint ? h("span", { class: "hint", id: hintId }, hint) : null,
    control,
    h("p", { class: "error", id: errId }));
}

export function newTicket() {
  const subject = h("input", { type: "text", name: "subject", maxlength: "200", autocomplete: "off", required: true });
  const category = h("select", { name: "category", required: true },
    h("option", { value: "" }, "Choose a category"),
    [["billing", "Billing"], ["technical", "Technical"], ["account", "Account"], ["other", "Other"]].map(([v, t]) => h("option", { value: v }, t)));
  const priority = h("select", { name: "priority" },
    [["low", "Low"], ["normal", "Normal"], ["high", "High"], ["urgent", "Urgent"]].map(([v, t]) => h("option", { value: v, selected: v === "normal" }, t)));
  const body = h("textarea", { name: "body", rows: "6", maxlength: "20000", required: true });
  const files = h("input", { type: "file", name: "attachments", multiple: true, accept: ACCEPTED.join(",") });
  const summary = h("div", { class: "alert", id: "form-errors", role: "alert", tabindex: "-1" });
  const submit = h("button", { type: "submit", id: "send-ticket" }, "Send ticket");
  const controls = { subject, category, priority, body, attachments: files };
  let key = null; // the Idempotency-Key of this submission, kept until it is answered for good

  function clearErrors() {
    for (const c of Object.values(controls)) {
      c.removeAttribute("aria-invalid");
      document.getElementById(`${c.id}-error`).textContent = "";
    }
    summary.replaceChildren();
  }
  function showErrors(errors) {
    clearErrors();
    const items = [];
    for (const { field: name, message } of errors) {
      const c = controls[name];
      if (c) {
        c.setAttribute("aria-invalid", "true");
        const el = document.getElementById(`${c.id}-error`);
        el.textContent = el.textContent ? `${el.textContent} ${message}` : message;
      }
      items.push(h("li", {}, message));
    }
    replace(summary, h("p", {}, errors.length === 1 ? "Please fix this problem:" : `Please fix these ${errors.length} problems:`), h("ul", {}, items));
    const first = errors.map((e) => controls[e.field]).find(Boolean);
    if (first) first.focus(); else summary.focus();
  }
  function check() {
    const errors = [];
    if (!subject.value.trim()) errors.push({ field: "subject", message: "Enter a subject." });
    if (!category.value) errors.push({ field: "category", message: "Choose a category." });
    if (!body.value.trim()) errors.push({ field: "body", message: "Describe the problem." });
    const list = [...files.files];
    if (list.length > MAX_FILES) errors.push({ field: "attachments", message: `Attach at most ${MAX_FILES} files.` });
    for (const f of list) {
      if (!ACCEPTED.includes(f.type)) errors.push({ field: "attachments", message: `${f.name}: this kind of file is not accepted.` });
      else if (f.size > MAX_BYTES) errors.push({ field: "attachments", message: `${f.name} is larger than 10 MB.` });
      else if (f.size === 0) errors.push({ field: "attachments", message: `${f.name} is empty.` });
    }
    return errors;
  }
  // fieldOf maps the API's field path (attachments[0].size) to a control.
  const fieldOf = (path) => (path || "").replace(/\[.*$/, "").split(".")[0];

  const form = h("form", { id: "ticket-form", novalidate: true, on: { submit: async (e) => {
    e.preventDefault();
    const errors = check();
    if (errors.length) { showErrors(errors); return; }
    clearErrors();
    const list = [...files.files];
    key = key || crypto.randomUUID();
    submit.disabled = true;
    submit.textContent = "Sending…";
    const r = await call("/v1/tickets", { method: "POST", headers: { "Idempotency-Key": key }, body: {
      subject: subject.value.trim(), body: body.value, category: category.value, priority: priority.value,
      attachments: list.map((f) => ({ name: f.name, size: f.size, content_type: f.type })),
    } });
    if (!r.ok) {
      submit.disabled = false;
      submit.textContent = "Send ticket";
      // A retry of the same submission must reuse the key only when the outcome is unknown.
      if (r.status !== 0 && r.status !== 409 && r.status < 500) key = null;
      const errs = (r.data && r.data.errors || []).map((x) => ({ field: fieldOf(x.field), message: `${x.field}: ${x.message}` }));
      showErrors(errs.length ? errs : [{ field: "", message: problemText(r) }]);
      return;
    }
    key = null;
    const created = r.data;
    const failed = [];
    for (let i = 0; i < created.attachments.length; i++) {
      const a = created.attachments[i];
      submit.textContent = `Uploading ${a.name}…`;
      try {
        const up = await fetch(a.upload_url, { method: "PUT", body: list[i], headers: { "Content-Type": a.content_type } });
        if (!up.ok) failed.push(`${a.name} (HTTP ${up.status})`);
      } catch {
        failed.push(`${a.name} (Storage could not be reached)`);
      }
    }
    if (failed.length) {
      announce(`Ticket filed, but ${failed.length} attachment(s) could not be uploaded: ${failed.join(", ")}`);
    } else {
      announce(`Ticket filed${created.attachments.length ? ` with ${created.attachments.length} attachment(s)` : ""}`);
    }
    location.hash = `#/tickets/${created.id}`;
  } } },
    summary,
    field("subject", "Subject", subject),
    field("category", "Category", category),
    field("priority", "Priority", priority),
    field("body", "What happened?", body, "Plain text. Include what you expected and what you saw."),
    field("attachments", "Attachments (optional)", files, "Up to 5 files, 10 MB each: images, PDF, text, CSV, ZIP, JSON, Word or Excel."),
    h("div", { class: "actions" }, submit));
  return { node: h("div", {}, h("h1", {}, "New ticket"), h("p", {}, `For ${tenantName()}. Our support team sees it in the helpdesk within a minute.`), form) };
}

// ---------- plan and billing ----------

export function billing({ world }) {
  const result = h("div", { class: "success", id: "checkout-result", role: "status" });
  const error = h("p", { class: "alert", id: "billing-error", role: "alert" });
  const current = h("p", { id: "plan-now" }, "Loading…");
  const m = session.membership;
  const canPay = m && (m.role === "owner" || m.role === "admin");
  (async () => {
    const r = await call("/v1/account");
    if (!r.ok) { current.textContent = problemText(r); return; }
    const b = r.data.billing;
    const s = statusWords(b);
    current.textContent = `${s.words}${b.plan ? `, plan ${b.plan}` : ""}.${s.extra ? ` ${s.extra}.` : ""}`;
  })();

  const price = h("select", { name: "price" }, world.prices.map((p) => h("option", { value: p }, `Pro (${p})`)));
  const start = h("button", { type: "submit", id: "start-checkout" }, "Start checkout");
  const checkout = h("form", { id: "checkout-form", on: { submit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    start.disabled = true;
    const r = await call("/v1/checkout-sessions", { method: "POST", headers: { "Idempotency-Key": crypto.randomUUID() }, body: {
      price_id: price.value, success_path: "/#/billing?checkout=success", cancel_path: "/#/billing?checkout=canceled" } });
    start.disabled = false;
    if (!r.ok) { error.textContent = problemText(r); return; }
    const complete = h("button", { type: "button", id: "complete-payment", on: { click: async () => {
      complete.disabled = true;
      const sent = await call("/_dev/stripe-events", { method: "POST", auth: false, body: { tenant_id: session.tenantId, kind: "subscription_created" } });
      complete.disabled = false;
      if (!sent.ok || sent.data.webhook_status !== 200) {
        error.textContent = `The webhook refused the event: ${problemText(sent.ok ? { status: sent.data.webhook_status, data: sent.data.webhook_answer } : sent)}`;
        return;
      }
      announce("Payment sent to the webhook as Stripe would; your account shows it in a moment.");
      location.hash = "#/account";
    } } }, "Complete payment (a signed Stripe event)");
    replace(result,
      h("p", {}, "Stripe Checkout session ", h("code", {}, r.data.id), " was created (by stripe-mock)."),
      h("p", {}, "In production the browser now goes to Stripe's payment page, ", h("code", {}, r.data.url),
        ". make dev has no such page, so finish the payment as Stripe would: it signs the event Stripe sends and posts it to the webhook."),
      complete);
    complete.focus();
  } } },
    field("price", "Plan", price),
    h("div", { class: "actions" }, start));

  const manage = world.billing_portal ? h("button", { type: "button", class: "secondary", id: "manage-billing", on: { click: async () => {
    error.textContent = "";
    const r = await call("/v1/billing-portal-sessions", { method: "POST", headers: { "Idempotency-Key": crypto.randomUUID() }, body: {} });
    if (!r.ok) { error.textContent = problemText(r); return; }
    replace(result, h("p", {}, "Stripe's billing portal session is ready; in production the browser goes to ", h("code", {}, r.data.url || ""), "."));
  } } }, "Manage billing") : null;

  const back = new URLSearchParams((location.hash.split("?")[1]) || "").get("checkout");
  return { node: h("div", {},
    h("h1", {}, "Plan and billing"),
    back === "success" ? h("p", { class: "success" }, "Welcome back from Checkout: your payment is being confirmed.") : null,
    back === "canceled" ? h("p", { class: "alert" }, "Checkout was cancelled; nothing was charged.") : null,
    h("section", { class: "card", "aria-labelledby": "now-plan" }, h("h2", { id: "now-plan" }, `Current plan of ${tenantName()}`), current),
    error,
    canPay
      ? h("section", { class: "card", "aria-labelledby": "change-plan" }, h("h2", { id: "change-plan" }, "Subscribe or change plan"), checkout, manage, result)
      : h("p", { class: "card" }, "Only an owner or admin of this company can change the plan."),
  ) };
}
