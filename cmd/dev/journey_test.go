package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/demo"
)

// How long the queue may take: a push runs within a second of its commit; a push that failed
// is retried after 15 s (±20%, jobs.DefaultBackoff). Both bounds leave room for a busy machine.
const (
	pushWithin  = 60 * time.Second
	retryWithin = 90 * time.Second
)

// userRadio is the sign-in choice of a seeded user.
func userRadio(email string) string {
	for _, u := range demo.Users {
		if u.Email == email {
			return "user-" + u.ID.String()
		}
	}
	panic("no seeded user " + email)
}

// attachment writes a small text file to upload.
func attachment(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// signIn signs in through the welcome page's form (with the mouse).
func (b *browser) signIn(email string) {
	b.t.Helper()
	b.eval(`(() => { try { sessionStorage.clear() } catch { /* about:blank has none */ } return true })()`, nil)
	b.open("")
	b.do("sign in as "+email, chromedp.Click(chromedp.ID(userRadio(email))), chromedp.Click(chromedp.ID("sign-in")))
	b.until("the account page", `!!document.getElementById("billing-status")`, 15*time.Second)
}

// hash is the page's current route.
func (b *browser) hash() string {
	var h string
	b.eval(`location.hash`, &h)
	return h
}

// fileTicket fills the new-ticket form with the mouse and sends it; it returns the new
// ticket's id once its page shows.
func (b *browser) fileTicket(subject, body, file string) string {
	b.t.Helper()
	b.route("#/tickets/new")
	b.until("the ticket form", `!!document.getElementById("ticket-form")`, 10*time.Second)
	b.do("fill the ticket form",
		chromedp.SendKeys(chromedp.ID("subject"), subject),
		chromedp.SetValue(chromedp.ID("category"), "technical"),
		chromedp.SendKeys(chromedp.ID("body"), body))
	if file != "" {
		b.do("attach "+file, chromedp.SetUploadFiles(chromedp.ID("attachments"), []string{file}))
	}
	b.do("send the ticket", chromedp.Click(chromedp.ID("send-ticket")))
	q, _ := json.Marshal(subject)
	b.until("the new ticket's page", fmt.Sprintf(`location.hash.startsWith("#/tickets/") && location.hash !== "#/tickets/new" && document.querySelector("main h1").textContent === %s`, q), 20*time.Second)
	return strings.TrimPrefix(b.hash(), "#/tickets/")
}

// The whole journey the seed describes, clicked through in Chromium against `make dev` (its
// handlers, queue workers and stand-ins): the owner pays (stripe-mock's Checkout session,
// then the signed event Stripe would send), the account shows active and HubSpot received
// exactly one company update with the plan; a ticket filed with an attachment (uploaded
// straight to the Storage stand-in's signed URL) appears and reached Zendesk exactly once;
// with HubSpot switched down another ticket still goes through, the account says "CRM update
// failed, we are retrying", and switching HubSpot up delivers the update once. Every page and
// state is screenshotted and scanned with axe-core at 375 and 1280 px.
func TestPortalJourneyInABrowser(t *testing.T) {
	t.Parallel()
	d := setup(t)
	b := newBrowser(t, d.base, d.project.Root)
	tenantA := demo.TenantID.String()
	b.resize(1280)

	// make dev opens on a page that explains itself.
	b.open("")
	b.see("Your client portal, running on this machine", 5*time.Second)
	b.see("Sign in as one of the seeded people", time.Second)
	b.check("welcome")

	b.signIn(demo.UserEmail)
	b.see("No subscription yet", 10*time.Second)
	b.check("account-empty")

	// 1. Pay: a Checkout session from stripe-mock, then the event Stripe sends.
	b.route("#/billing")
	b.until("the checkout button", `!!document.getElementById("start-checkout")`, 10*time.Second)
	b.check("billing")
	b.do("start checkout", chromedp.Click(chromedp.ID("start-checkout")))
	b.until("the session", `!!document.getElementById("complete-payment")`, 20*time.Second)
	require.Contains(t, b.answered("/v1/checkout-sessions"), int64(201), "POST /v1/checkout-sessions answered 201")
	b.see("cs_", time.Second)
	b.check("billing-checkout-session")
	b.do("complete the payment", chromedp.Click(chromedp.ID("complete-payment")))
	b.until("the account to show active", `location.hash === "#/account" && document.getElementById("billing-status") && document.getElementById("billing-status").textContent === "Active"`, 20*time.Second)

	// 2. HubSpot received exactly one company update, with the plan.
	b.see("CRM up to date", pushWithin)
	got := d.received(t)
	n, plans := got.companyUpdates(tenantA)
	require.Equal(t, 1, n, "one company update for the payment: %+v", got.HubSpot)
	require.Equal(t, []string{"pro"}, plans)
	b.check("account-active")

	// 3. A ticket with an attachment: in the list, and in Zendesk exactly once.
	b.route("#/tickets/new")
	b.until("the ticket form", `!!document.getElementById("ticket-form")`, 10*time.Second)
	b.check("new-ticket")
	b.do("send an empty form", chromedp.Click(chromedp.ID("send-ticket")))
	b.until("the field errors", `document.getElementById("subject").getAttribute("aria-invalid") === "true"`, 5*time.Second)
	var wiring struct{ Described, Error, Focus string }
	b.eval(`({Described: document.getElementById("subject").getAttribute("aria-describedby"),
		Error: document.getElementById("subject-error").textContent, Focus: document.activeElement.id})`, &wiring)
	require.Contains(t, wiring.Described, "subject-error", "the error is tied to its field")
	require.Equal(t, "Enter a subject.", wiring.Error)
	require.Equal(t, "subject", wiring.Focus, "focus goes to the first field in error")
	b.see("Please fix these 3 problems", time.Second)
	b.check("new-ticket-errors")
	b.route("#/tickets")

	// User content stays text: markup in a subject or body is shown, never run.
	subject := `Printer on fire <img src=x onerror="document.title='owned'">`
	file := attachment(t, "receipt.txt", "paid 49 USD\n")
	ticketID := b.fileTicket(subject, "It started at 9.\n<script>document.title='owned'</script>", file)
	var markup struct {
		Injected int
		Body     string
		Title    string
	}
	b.eval(`({Injected: document.querySelectorAll("main img, main script").length,
		Body: document.getElementById("ticket-body").textContent, Title: document.title})`, &markup)
	require.Zero(t, markup.Injected, "no element made from user content")
	require.Contains(t, markup.Body, "<script>document.title='owned'</script>")
	require.NotEqual(t, "owned", markup.Title)
	b.see("receipt.txt", 5*time.Second)
	require.Contains(t, b.answered("/storage/v1/object/upload/sign/"), int64(200), "the file was PUT to the signed Storage URL")
	b.check("ticket-detail")
	b.route("#/tickets")
	b.see("Printer on fire", 10*time.Second)
	b.check("tickets")
	eventually(t, "Zendesk to receive the ticket", pushWithin, func() bool { return d.received(t).zendeskTickets(ticketID) > 0 })
	b.route("#/account")
	b.see("support tickets delivered", pushWithin)
	require.Equal(t, 1, d.received(t).zendeskTickets(ticketID), "exactly one Zendesk ticket for ours")

	// 4. HubSpot down: tickets still go through, the CRM update waits and says so.
	b.route("#/ops")
	b.until("the provider switches", `!!document.getElementById("hubspot-down")`, 10*time.Second)
	b.until("the live view of HubSpot's company update with its plan",
		`document.getElementById("hubspot-received").innerText.includes("pro")`, 5*time.Second)
	b.check("ops")
	b.do("switch HubSpot down", chromedp.Click(chromedp.ID("hubspot-down")))
	b.until("HubSpot to be down", `document.getElementById("hubspot-down").getAttribute("aria-pressed") === "true"`, 5*time.Second)
	second := b.fileTicket("Second ticket while HubSpot is down", "Still works?", "")
	b.route("#/ops")
	b.until("the event form", `!!document.getElementById("event-form")`, 10*time.Second)
	b.do("send a paid invoice for Demo Co",
		chromedp.SetValue(chromedp.ID("event-tenant"), tenantA),
		chromedp.SetValue(chromedp.ID("event-kind"), "payment_succeeded"),
		chromedp.Click(chromedp.ID("send-event")))
	b.see("the webhook answered 200 (processed)", 10*time.Second)
	b.check("ops-hubspot-down")
	b.route("#/account")
	b.see("CRM update failed, we are retrying", retryWithin)
	b.check("account-crm-retrying")
	eventually(t, "Zendesk to receive the second ticket", pushWithin, func() bool { return d.received(t).zendeskTickets(second) == 1 })
	n, _ = d.received(t).companyUpdates(tenantA)
	require.Equal(t, 1, n, "nothing reached HubSpot while it was down")

	// HubSpot up again: the waiting update is delivered, once.
	b.route("#/ops")
	b.until("the provider switches", `!!document.getElementById("hubspot-up")`, 10*time.Second)
	b.do("switch HubSpot up", chromedp.Click(chromedp.ID("hubspot-up")))
	b.route("#/account")
	b.see("CRM up to date", retryWithin)
	got = d.received(t)
	n, plans = got.companyUpdates(tenantA)
	require.Equal(t, 2, n, "the retried update arrived exactly once: %+v", got.HubSpot)
	require.Equal(t, []string{"pro", "pro"}, plans)
	require.Equal(t, 1, got.zendeskTickets(second), "the second ticket reached Zendesk once")
	b.noProblems()
}

// A member of tenant A who edits the URL to tenant B's ticket sees "not found", because the
// API answered 404; their own tenant's ticket opens. A user of both tenants picks one, and the
// portal then acts for it (X-Tenant-Id). Loading and error states pass axe-core too.
func TestPortalTenantWallsAndStatesInABrowser(t *testing.T) {
	t.Parallel()
	d := setup(t)
	b := newBrowser(t, d.base, d.project.Root)
	b.resize(1280)

	b.signIn("member@demo.test")
	b.open("#/tickets/" + demo.SecondTicketID.String())
	b.until("the not-found page", `!!document.getElementById("not-found")`, 10*time.Second)
	require.Equal(t, []int64{404}, b.answered("/v1/tickets/"+demo.SecondTicketID.String()), "the API answered 404")
	b.see("Ticket not found", time.Second)
	b.check("ticket-not-found")
	b.route("#/tickets/" + demo.TicketID.String())
	b.see("Invoice address", 10*time.Second)
	require.Equal(t, []int64{200}, b.answered("/v1/tickets/"+demo.TicketID.String()))
	b.route("#/billing")
	b.see("Only an owner or admin of this company can change the plan", 10*time.Second)
	b.check("billing-member")

	// Loading, then error, on the ticket list; loading on the account.
	b.hold("*/v1/tickets?*")
	b.route("#/tickets")
	b.waitHeld()
	b.see("Loading tickets", 5*time.Second)
	b.check("tickets-loading")
	b.release(503)
	b.see("the database is unavailable; retry shortly", 5*time.Second)
	b.check("tickets-error")
	b.hold("*/v1/account*")
	b.route("#/account")
	b.waitHeld()
	b.see("Loading the account", 5*time.Second)
	b.check("account-loading")
	b.release(0)
	b.until("the account", `!!document.getElementById("billing-status")`, 10*time.Second)

	// The consultant belongs to both tenants: the picker switches what the portal acts for.
	b.signIn("consultant@both.test")
	b.see("Account: Demo Co", 10*time.Second)
	b.do("pick Harbor Ltd", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const p = document.getElementById("tenant-picker"); p.value = %q; p.dispatchEvent(new Event("change")); })()`,
		demo.SecondTenantID.String())))
	b.see("Account: Harbor Ltd", 10*time.Second)
	b.check("account-two-tenants")
	b.route("#/tickets")
	b.see("Export of last year's invoices", 10*time.Second)
	b.noProblems()
}

// The keyboard-only journey at both widths: Tab, Shift+Tab, Enter and Space, no mouse. Sign
// in, file a ticket with an attachment, see it in the list, open it. Every stop shows a
// visible focus ring and focus moves forward in document order.
func TestPortalKeyboardOnlyInABrowser(t *testing.T) {
	t.Parallel()
	d := setup(t)
	b := newBrowser(t, d.base, d.project.Root)
	owner := userRadio(demo.UserEmail)
	for _, w := range widths {
		b.resize(w)
		b.eval(`(() => { try { sessionStorage.clear() } catch { /* about:blank has none */ } return true })()`, nil)
		b.open("")

		// Space picks the person, Enter signs in.
		b.tabTo("the first person", func(f focused) bool { return f.ID == owner })
		b.key(" ", false)
		var checked bool
		b.eval(fmt.Sprintf(`document.getElementById(%q).checked`, owner), &checked)
		require.True(t, checked)
		b.tabTo("the sign-in button", func(f focused) bool { return f.ID == "sign-in" })
		b.key("\r", false)
		b.until("the account page", `!!document.getElementById("billing-status")`, 15*time.Second)

		b.tabTo("the New ticket link", func(f focused) bool { return f.Href == "#/tickets/new" })
		b.key("\r", false)
		b.until("the ticket form", `!!document.getElementById("ticket-form")`, 10*time.Second)
		subject := fmt.Sprintf("Keyboard ticket at %d px", w)
		b.tabTo("the subject", func(f focused) bool { return f.ID == "subject" })
		b.key(subject, false)
		b.tabTo("the category", func(f focused) bool { return f.ID == "category" })
		b.key("t", false) // a select takes the option starting with the letter typed: Technical
		// Shift+Tab goes back to the subject, Tab returns.
		b.key("\t", true)
		var back string
		b.eval(`document.activeElement.id`, &back)
		require.Equal(t, "subject", back, "Shift+Tab goes back one field")
		b.tabTo("the category again", func(f focused) bool { return f.ID == "category" })
		b.tabTo("the message", func(f focused) bool { return f.ID == "body" })
		b.key("Typed without a mouse.", false)
		b.tabTo("the file picker", func(f focused) bool { return f.ID == "attachments" })
		// A keyboard user opens the system's file dialog with Space; headless Chromium has
		// none, so the file is handed to the focused input as that dialog would.
		b.do("choose a file", chromedp.SetUploadFiles(chromedp.ID("attachments"), []string{attachment(t, "steps.txt", "1. press Tab\n")}))
		b.tabTo("the send button", func(f focused) bool { return f.ID == "send-ticket" })
		b.key("\r", false)
		q, _ := json.Marshal(subject)
		b.until("the new ticket", fmt.Sprintf(`document.querySelector("main h1") && document.querySelector("main h1").textContent === %s`, q), 20*time.Second)
		var category string
		b.eval(`document.querySelector("dl.facts").innerText`, &category)
		require.Contains(t, category, "technical")
		b.see("steps.txt", 5*time.Second)

		b.tabTo("the way back to the list", func(f focused) bool { return f.Href == "#/tickets" && f.Text == "Back to your tickets" })
		b.key("\r", false)
		// The list, not the ticket page still showing its subject while the hash changes: the
		// list's render moves focus to its heading, which must happen before the first Tab.
		b.until("the list with the new ticket", fmt.Sprintf(`[...document.querySelectorAll("main li a")].some((a) => a.textContent === %s)`, q), 10*time.Second)
		b.tabTo("the ticket in the list", func(f focused) bool { return f.Text == subject })
		b.key("\r", false)
		b.until("the ticket page", fmt.Sprintf(`document.querySelector("main h1").textContent === %s && !!document.getElementById("ticket-body")`, q), 10*time.Second)
	}
	b.noProblems()
}

// With the queue workers off (`make dev -no-workers`, as when they lag behind) the account
// says what is still on its way: "payment received but syncing" after a paid invoice, and
// "support ticket pending" for tickets not yet in the helpdesk. The ticket list pages with
// the API's cursor: ten, then "Show more tickets" loads the rest and moves focus to the first
// new one.
func TestPortalShowsWhatIsStillOnItsWayInABrowser(t *testing.T) {
	t.Parallel()
	d := setupWorkers(t, false)
	status, body := d.send(t, "POST", "/_dev/stripe-events", "application/json",
		`{"tenant_id":"`+demo.TenantID.String()+`","kind":"payment_succeeded"}`, "")
	require.Equal(t, 200, status, "%s", body)
	require.Contains(t, string(body), `"outcome":"processed"`)
	for i := range 11 {
		status, body := d.send(t, "POST", "/v1/tickets", "application/json",
			fmt.Sprintf(`{"subject":"Paged ticket %02d","body":"Filed by the test.","category":"other"}`, i+1), d.token,
			"Idempotency-Key", fmt.Sprintf("paging-%d", i))
		require.Equal(t, 201, status, "%s", body)
	}

	b := newBrowser(t, d.base, d.project.Root)
	b.resize(1280)
	b.signIn(demo.UserEmail)
	b.see("Payment received but syncing", 10*time.Second)
	b.see("Support ticket pending", time.Second)
	b.see("12 ticket(s) on the way to the helpdesk", time.Second)
	b.check("account-syncing")

	b.route("#/tickets")
	b.see("10 ticket(s) shown; more below", 10*time.Second)
	var shown int
	b.eval(`document.querySelectorAll("#ticket-list li").length`, &shown)
	require.Equal(t, 10, shown)
	require.Equal(t, []int64{200}, b.answered("/v1/tickets?limit=10"))
	b.check("tickets-first-page")
	b.do("show more", chromedp.Click(chromedp.ID("more-tickets")))
	b.see("12 ticket(s) shown.", 10*time.Second)
	var after struct {
		Shown   int
		Focus   string
		Visible bool
	}
	b.eval(`({Shown: document.querySelectorAll("#ticket-list li").length,
		Focus: document.activeElement.textContent, Visible: !document.getElementById("more-tickets").hidden})`, &after)
	require.Equal(t, 12, after.Shown)
	require.False(t, after.Visible, "no more pages")
	require.Equal(t, "Paged ticket 01", after.Focus, "focus on the first ticket of the new page (newest first: the first one filed, then the seed's)")
	require.Len(t, b.answered("cursor="), 1, "the second page asked with the cursor")
	b.check("tickets-all-pages")
	b.noProblems()
}
