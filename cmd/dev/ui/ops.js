// The ops console (make dev only): provider switches, delivery health, dead letters with
// requeue, a "send a Stripe event" form and a live view of what the HubSpot and Zendesk
// stand-ins received. Its endpoints live under /_dev/ on the dev server only.
import { h, replace, announce, when, table } from "./dom.js";
import { call, problemText } from "./api.js";

const MODES = [["up", "Up"], ["down", "Down"], ["rate-limited", "Rate-limited"]];
const NAMES = { stripe: "Stripe", hubspot: "HubSpot", zendesk: "Zendesk", supabase: "Supabase Storage" };

export function ops({ world }) {
  const switches = h("div", { class: "switches", id: "switches" }, h("p", { class: "loading" }, "Loading providers…"));
  const healthBox = h("div", { id: "health" }, h("p", { class: "loading" }, "Loading delivery health…"));
  const deadBox = h("div", { id: "dead-letters" }, h("p", { class: "loading" }, "Loading dead letters…"));
  const hubBox = h("div", { id: "hubspot-received" }, h("p", { class: "loading" }, "Loading…"));
  const deskBox = h("div", { id: "zendesk-received" }, h("p", { class: "loading" }, "Loading…"));
  const opsStatus = h("p", { class: "success", id: "ops-status", role: "status" });
  const opsError = h("p", { class: "alert", id: "ops-error", role: "alert" });

  function say(ok, message) {
    opsError.textContent = ok ? "" : message;
    opsStatus.textContent = ok ? message : "";
  }

  function renderSwitches(states) {
    replace(switches, states.map((p) => {
      const name = NAMES[p.provider] || p.provider;
      const headingId = `switch-${p.provider}`;
      if (!p.standin) {
        return h("div", { class: "switch" }, h("h3", { id: headingId }, name), h("p", {}, p.note || "the real service"));
      }
      return h("div", { class: "switch" },
        h("h3", { id: headingId }, name),
        h("p", { class: "meta" }, `Now: ${p.mode} · ${p.url}`),
        h("div", { class: "actions", role: "group", "aria-labelledby": headingId },
          MODES.map(([mode, label]) => h("button", {
            type: "button", class: "secondary", id: `${p.provider}-${mode}`, "aria-pressed": String(p.mode === mode),
            on: { click: () => switchTo(p.provider, mode, `${name} ${label.toLowerCase()}`) },
          }, label))));
    }));
  }
  async function switchTo(provider, mode, words) {
    const r = await call(`/_dev/providers/${provider}/${mode}`, { method: "POST", auth: false });
    if (!r.ok) { say(false, problemText(r)); return; }
    const focused = document.activeElement && document.activeElement.id;
    renderSwitches(r.data);
    if (focused) document.getElementById(focused)?.focus();
    say(true, `Switched ${words}.`);
  }

  function renderHealth(rep) {
    const wh = rep.webhook;
    replace(healthBox,
      h("p", {}, `Last ${Math.round(rep.window_seconds / 3600)} hours. Stripe deliveries: ${wh.received} received, ${wh.processed} applied, `,
        `${wh.ignored} ignored, ${wh.unmatched} unmatched, ${wh.rejected} rejected (success rate ${Math.round(wh.success_rate * 100)}%).`),
      table("Pushes per integration", ["Integration", "Attempts", "Failures", "Waiting", "Oldest waiting", "Dead letters", "Failing", "Last success"],
        rep.integrations.map((i) => [i.integration === "crm" ? "CRM (HubSpot)" : "Helpdesk (Zendesk)", i.attempts, i.failures, i.pending,
          i.pending ? `${Math.round(i.oldest_pending_seconds)} s` : "—", i.dead_letters, i.failing_subjects, when(i.last_success_at) || "never"])));
  }

  function renderDead(list) {
    if (list.length === 0) {
      replace(deadBox, h("p", {}, "No dead letters: every push either succeeded or is still being retried."));
      return;
    }
    replace(deadBox, table("Dead letters", ["Job", "Integration", "Subject", "Attempts", "Last error", "Given up", "Action"],
      list.map((d) => [String(d.job_id), d.integration, d.subject, d.attempts, d.last_error, when(d.finalized_at),
        h("button", { type: "button", class: "secondary", "aria-label": `Requeue job ${d.job_id}`, on: { click: async () => {
          const r = await call(`/_dev/dead-letters/${d.job_id}/requeue`, { method: "POST", auth: false, body: {} });
          const skipped = r.ok && (r.data.skipped || []).length > 0;
          say(r.ok, !r.ok ? problemText(r) : skipped
            ? `Job ${d.job_id} was already covered by another push; it is marked resolved.`
            : `Job ${d.job_id} is back on the ${d.integration} queue.`);
          loadDead(true);
        } } }, "Requeue")])));
  }

  function renderReceived(data) {
    replace(hubBox, data.hubspot === null ? h("p", {}, "HubSpot is the real service here.")
      : data.hubspot.length === 0 ? h("p", {}, "Nothing received yet.")
        : table("HubSpot upserts", ["Received", "Object", "Id", "Plan", "Billing status"],
          data.hubspot.map((u) => [when(u.at), u.object_type, u.id, (u.properties || {}).portal_plan || "—", (u.properties || {}).portal_billing_status || "—"])));
    replace(deskBox, data.zendesk === null ? h("p", {}, "Zendesk is the real service here.")
      : data.zendesk.length === 0 ? h("p", {}, "Nothing received yet.")
        : table("Zendesk tickets", ["Created", "Zendesk id", "Our ticket id", "Subject", "Status"],
          data.zendesk.map((t) => [when(t.created_at), String(t.id), t.external_id, t.subject, t.status])));
  }

  const seen = {};
  async function poll(path, render, force) {
    const r = await call(path, { auth: false });
    const key = JSON.stringify(r.data);
    if (!force && seen[path] === key) return;
    seen[path] = key;
    if (r.ok) render(r.data);
  }
  const loadDead = (force) => poll("/_dev/dead-letters", renderDead, force);
  async function refresh(force) {
    await Promise.all([
      poll("/_dev/providers", renderSwitches, force),
      poll("/_dev/health", renderHealth, force),
      loadDead(force),
      poll("/_dev/received", renderReceived, force),
    ]);
  }

  // The "send a Stripe event" form.
  const tenant = h("select", { id: "event-tenant", name: "tenant" }, world.tenants.map((t) => h("option", { value: t.id }, t.name)));
  const kind = h("select", { id: "event-kind", name: "kind" }, world.event_kinds.map((k) => h("option", { value: k.kind }, `${k.label} · ${k.type}`)));
  const send = h("button", { type: "submit", id: "send-event" }, "Sign and send");
  const eventForm = h("form", { id: "event-form", on: { submit: async (e) => {
    e.preventDefault();
    send.disabled = true;
    const r = await call("/_dev/stripe-events", { method: "POST", auth: false, body: { tenant_id: tenant.value, kind: kind.value } });
    send.disabled = false;
    if (!r.ok) { say(false, problemText(r)); return; }
    const answer = r.data.webhook_answer || {};
    say(r.data.webhook_status === 200,
      `Event ${r.data.event_id}: the webhook answered ${r.data.webhook_status}${answer.outcome ? ` (${answer.outcome})` : answer.detail ? ` (${answer.detail})` : ""}.`);
    refresh(false);
  } } },
    h("div", { class: "field" }, h("label", { for: "event-tenant" }, "Tenant"), tenant),
    h("div", { class: "field" }, h("label", { for: "event-kind" }, "Event"), kind),
    h("div", { class: "actions" }, send));

  refresh(true);
  const timer = setInterval(() => refresh(false), 2000);
  const node = h("div", {},
    h("h1", {}, "Ops console"),
    h("p", { class: "lead" }, "Only in make dev. Switch a provider's local stand-in off and back on, replay Stripe's events, ",
      "requeue what gave up, and watch what HubSpot and Zendesk received. The same numbers are in ", h("code", {}, "make reconcile ARGS=health"), "."),
    opsStatus, opsError,
    h("section", { "aria-labelledby": "providers-heading" }, h("h2", { id: "providers-heading" }, "Providers"), switches),
    h("section", { class: "card", "aria-labelledby": "event-heading" },
      h("h2", { id: "event-heading" }, "Send a Stripe event"),
      h("p", {}, "Builds the event from stripe-mock's own fixtures for the tenant's subscription, signs it with the webhook secret and posts it to ",
        h("code", {}, "POST /v1/webhooks/stripe"), "."),
      eventForm),
    h("section", { "aria-labelledby": "health-heading" }, h("h2", { id: "health-heading" }, "Delivery health"), healthBox),
    h("section", { "aria-labelledby": "dead-heading" }, h("h2", { id: "dead-heading" }, "Dead letters"), deadBox),
    h("section", { "aria-labelledby": "received-heading" },
      h("h2", { id: "received-heading" }, "What the stand-ins received"),
      h("h3", {}, "HubSpot"), hubBox,
      h("h3", {}, "Zendesk"), deskBox),
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "refresh-ops", on: { click: () => { refresh(true); announce("Ops console refreshed"); } } }, "Refresh now")));
  announce("");
  return { node, stop: () => clearInterval(timer) };
}
