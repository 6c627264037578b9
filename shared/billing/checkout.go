package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stripe/stripe-go/v76"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Default return paths on the portal when a request names none. Stripe replaces
// {CHECKOUT_SESSION_ID} in the success URL.
const (
	DefaultSuccessPath = "/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}"
	DefaultCancelPath  = "/billing?checkout=canceled"
)

// maxPathLen bounds a return path (Stripe accepts URLs up to 5000 characters).
const maxPathLen = 1024

// StripeAPI is what checkout-create needs from Stripe (StripeClient, or a fake in tests).
type StripeAPI interface {
	NewCustomer(ctx context.Context, params *stripe.CustomerParams) (*stripe.Customer, error)
	NewCheckoutSession(ctx context.Context, params *stripe.CheckoutSessionParams) (*stripe.CheckoutSession, error)
	NewBillingPortalSession(ctx context.Context, params *stripe.BillingPortalSessionParams) (*stripe.BillingPortalSession, error)
}

// TypeSubscriptionExists is the problem type of a checkout for a tenant that already has a
// live subscription: a second one would bill twice.
const TypeSubscriptionExists = "/problems/subscription-exists"

// CheckoutOptions configure a CheckoutHandler.
type CheckoutOptions struct {
	// Prices are the Stripe price ids a tenant may subscribe to (STRIPE_PRICE_IDS), each
	// either "price_..." or "plan=price_...".
	Prices []string
	// PortalURL is the portal's origin (and base path) that return paths are resolved on.
	PortalURL *url.URL
	// Decode reads a request's body into its struct strictly and validates it
	// (validation.DecodeJSON; package checkout wires it). It is passed in rather than imported
	// so the webhook, which shares this package and never validates a request, does not link
	// the validator: validator/v10's package initialisation alone was a third of the webhook's
	// cold-start init.
	Decode RequestDecoder
}

// RequestDecoder reads r's JSON body into dst and validates it, answering a problem (400, 413,
// 415, 422) for a body it refuses.
type RequestDecoder func(r *http.Request, dst any) error

// CheckoutHandler serves POST /v1/checkout-sessions. It must run behind auth.Require and
// tenant.Middleware: the tenant comes from the verified identity, never from the body.
type CheckoutHandler struct {
	db     db.Querier
	stripe StripeAPI
	prices []string
	paths  returnPaths
	decode RequestDecoder
}

// NewCheckoutHandler checks o and builds the handler.
func NewCheckoutHandler(q db.Querier, api StripeAPI, o CheckoutOptions) (*CheckoutHandler, error) {
	var prices []string
	for _, p := range o.Prices {
		// "plan=price_..." entries name the plan; only the price id matters here.
		if _, id, ok := strings.Cut(p, "="); ok {
			p = id
		}
		if p = strings.TrimSpace(p); p != "" {
			prices = append(prices, p)
		}
	}
	if len(prices) == 0 {
		return nil, ErrNoPrices
	}
	if o.Decode == nil {
		return nil, ErrNoDecoder
	}
	paths, err := newReturnPaths(o.PortalURL)
	if err != nil {
		return nil, err
	}
	return &CheckoutHandler{db: q, stripe: api, prices: prices, paths: paths, decode: o.Decode}, nil
}

// returnPaths resolves the return paths a request names on the portal's URL, so Stripe never
// sends the browser anywhere else (checkout's success and cancel, the billing portal's
// return).
type returnPaths struct {
	portal *url.URL
}

// newReturnPaths checks u is an absolute http(s) origin (and base path) without credentials,
// query or fragment.
func newReturnPaths(u *url.URL) (returnPaths, error) {
	if u == nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return returnPaths{}, ErrPortalURL
	}
	portal := *u
	portal.Path = strings.TrimRight(portal.Path, "/")
	portal.RawPath = ""
	return returnPaths{portal: &portal}, nil
}

// resolve turns path (def when empty) into a URL on the portal; an unsafe one adds a field
// error for field to fields.
func (p returnPaths) resolve(fields *[]problem.FieldError, field, path, def string) string {
	if path == "" {
		path = def
	}
	u, err := p.onPortal(path)
	if err != nil {
		*fields = append(*fields, problem.FieldError{Field: field, Message: "must be a path on the portal, such as /billing"})
	}
	return u
}

// fieldsProblem is the 422 of fields, naming each.
func fieldsProblem(fields []problem.FieldError) error {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.Field + " " + f.Message
	}
	return problem.Validation(strings.Join(parts, "; "), fields...)
}

// checkoutRequest is the body. There is deliberately no tenant field: one sent is refused as
// unknown.
type checkoutRequest struct {
	PriceID     string `json:"price_id" validate:"required,max=255"`
	SuccessPath string `json:"success_path" validate:"omitempty,max=1024"`
	CancelPath  string `json:"cancel_path" validate:"omitempty,max=1024"`
}

// checkoutResponse is the 201 body: the portal redirects the browser to URL.
type checkoutResponse struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// ServeHTTP checks the caller's role and the body, creates or reuses the tenant's Stripe
// customer and creates a subscription Checkout Session for it.
func (h *CheckoutHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req checkoutRequest
	scope, err := billingRequest(r, h.decode, &req)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	successURL, cancelURL, err := h.check(req)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	live, err := hasLiveSubscription(ctx, h.db, scope.TenantID)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	if live {
		web.Error(w, r, problem.New(http.StatusConflict, TypeSubscriptionExists, "Subscription exists",
			"the tenant already has a live subscription; change its plan or payment method in a billing portal session: POST "+BillingPortalPath))
		return
	}
	customerID, err := h.customerFor(ctx, scope.TenantID)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		Customer:          stripe.String(customerID),
		ClientReferenceID: stripe.String(scope.TenantID.String()),
		LineItems:         []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(req.PriceID), Quantity: stripe.Int64(1)}},
		SuccessURL:        stripe.String(successURL),
		CancelURL:         stripe.String(cancelURL),
		SubscriptionData: &stripe.CheckoutSessionSubscriptionDataParams{
			Metadata: map[string]string{MetadataTenantID: scope.TenantID.String()},
		},
		Metadata: map[string]string{MetadataTenantID: scope.TenantID.String()},
	}
	params.Context = ctx
	params.SetIdempotencyKey(sessionKey(scope, r.Header.Get("Idempotency-Key"), req))
	sess, err := h.stripe.NewCheckoutSession(ctx, params)
	if err != nil {
		web.Error(w, r, stripeProblem("create checkout session", err))
		return
	}
	// Only a session recorded here binds its customer when it completes (a Payment Link's
	// payer can name any tenant in client_reference_id). Without the record the browser is not
	// sent to pay: a retry (same Idempotency-Key: same session) records it.
	if _, err := h.db.Exec(ctx, `insert into private.checkout_sessions (session_id, tenant_id) values ($1, $2)
		on conflict (session_id) do nothing`, sess.ID, scope.TenantID); err != nil {
		web.Error(w, r, fmt.Errorf("record checkout session: %w", db.Classify(err)))
		return
	}
	web.JSON(w, http.StatusCreated, checkoutResponse{ID: sess.ID, URL: sess.URL})
}

// billingRequest is the start of every billing request (checkout, billing portal): the
// caller's tenant scope, which must be an owner's or an admin's, and the strictly decoded
// body in dst.
func billingRequest(r *http.Request, decode RequestDecoder, dst any) (tenant.Scope, error) {
	scope, ok := tenant.FromContext(r.Context())
	if !ok {
		return tenant.Scope{}, errors.New("billing: no tenant scope (put tenant.Middleware in front)")
	}
	if err := scope.Require(tenant.Owner, tenant.Admin); err != nil {
		return tenant.Scope{}, err
	}
	if err := decode(r, dst); err != nil {
		return tenant.Scope{}, err
	}
	return scope, nil
}

// check validates the price against the configured list and turns the paths into URLs on the
// portal; both failures are 422 with the field named.
func (h *CheckoutHandler) check(req checkoutRequest) (string, string, error) {
	var fields []problem.FieldError
	if !slices.Contains(h.prices, req.PriceID) {
		fields = append(fields, problem.FieldError{Field: "price_id", Message: "is not a plan you can subscribe to"})
	}
	success := h.paths.resolve(&fields, "success_path", req.SuccessPath, DefaultSuccessPath)
	cancel := h.paths.resolve(&fields, "cancel_path", req.CancelPath, DefaultCancelPath)
	if len(fields) > 0 {
		return "", "", fieldsProblem(fields)
	}
	return success, cancel, nil
}

// onPortal resolves a return path on the portal URL. Only a plain absolute path is accepted:
// no scheme, no host, no "//" or "\" (which browsers treat as a host), no control characters
// or spaces, no ".." segment, and none of these hidden behind percent-encoding.
func (p returnPaths) onPortal(path string) (string, error) {
	if len(path) > maxPathLen {
		return "", ErrUnsafePath
	}
	// Check the path as sent and each percent-decoding of it: a browser, a proxy or the
	// portal's router may decode it before it acts on it.
	decoded := path
	for round := 0; ; round++ {
		if unsafeChars(decoded) || dotSegment(decoded) {
			return "", ErrUnsafePath
		}
		next, err := url.PathUnescape(decoded)
		if err != nil {
			return "", ErrUnsafePath
		}
		if next == decoded {
			break
		}
		if round == 2 {
			return "", ErrUnsafePath // encoding in three layers: no honest client sends that
		}
		decoded = next
	}
	u, err := url.Parse(p.portal.String() + path)
	if err != nil || u.Scheme != p.portal.Scheme || u.Host != p.portal.Host || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(u.Path, p.portal.Path+"/") {
		return "", ErrUnsafePath
	}
	return u.String(), nil
}

// dotSegment reports a "." or ".." segment in the path part, which could climb out of the
// portal's base path.
func dotSegment(s string) bool {
	p, _, _ := strings.Cut(s, "?")
	p, _, _ = strings.Cut(p, "#")
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return true
		}
	}
	return false
}

// unsafeChars reports anything but a path starting with one slash (so no scheme and no
// "//host"), a backslash anywhere (browsers read it as a slash), or a control or space
// character.
func unsafeChars(s string) bool {
	if strings.ContainsRune(s, '\\') || strings.HasPrefix(s, "//") || !strings.HasPrefix(s, "/") {
		return true
	}
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0
}

// hasLiveSubscription reports whether any of the tenant's subscriptions, as its events left
// them, is one Stripe still bills or may bill again (active, trialing, past_due, unpaid,
// paused). An incomplete one is not: its first payment never went through, and Stripe expires
// it after 23 hours, so a new checkout is the way to pay.
func hasLiveSubscription(ctx context.Context, q db.Querier, tenantID uuid.UUID) (bool, error) {
	var live bool
	err := q.QueryRow(ctx, `select exists (select 1 from private.billing_subscriptions
		where tenant_id = $1 and status in ('active', 'trialing', 'past_due', 'unpaid', 'paused'))`, tenantID).Scan(&live)
	if err != nil {
		return false, fmt.Errorf("look up live subscription: %w", db.Classify(err))
	}
	return live, nil
}

// customerFor returns the tenant's Stripe customer, creating it with metadata.tenant_id when
// there is none. The creation's idempotency key is the tenant's, and its parameters come from
// the tenant row only, so two concurrent first checkouts get the same customer from Stripe.
func (h *CheckoutHandler) customerFor(ctx context.Context, tenantID uuid.UUID) (string, error) {
	id, err := tenantCustomer(ctx, h.db, tenantID)
	if err != nil || id != "" {
		return id, err
	}
	var (
		name    string
		contact *string
	)
	if err := h.db.QueryRow(ctx, `select name, contact_email from public.tenants where id = $1`, tenantID).Scan(&name, &contact); err != nil {
		return "", fmt.Errorf("read tenant: %w", db.Classify(err))
	}
	params := &stripe.CustomerParams{Metadata: map[string]string{MetadataTenantID: tenantID.String()}}
	if name != "" {
		params.Name = stripe.String(name)
	}
	if c := deref(contact); c != "" {
		params.Email = stripe.String(c)
	}
	params.Context = ctx
	params.SetIdempotencyKey("portal-customer-" + tenantID.String())
	cust, err := h.stripe.NewCustomer(ctx, params)
	if err != nil {
		return "", stripeProblem("create stripe customer", err)
	}
	if _, err := mapCustomer(ctx, h.db, cust.ID, tenantID); err != nil {
		return "", db.Classify(err)
	}
	return cust.ID, nil
}

// tenantCustomer returns the tenant's first Stripe customer ("" when it has none yet).
func tenantCustomer(ctx context.Context, q db.Querier, tenantID uuid.UUID) (string, error) {
	var id string
	err := q.QueryRow(ctx, `
		select customer_id from private.stripe_customers where tenant_id = $1
		order by created_at, customer_id limit 1`, tenantID).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look up stripe customer: %w", db.Classify(err))
	}
	return id, nil
}

// sessionKey is the Checkout Session's idempotency key: with the caller's Idempotency-Key,
// a repeat of the same request gets the same session from Stripe; without one, every request
// gets a fresh key (stripe-go's own retries reuse it).
func sessionKey(s tenant.Scope, clientKey string, req checkoutRequest) string {
	if clientKey == "" {
		return "portal-checkout-" + uuid.NewString()
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{
		s.TenantID.String(), s.UserID.String(), clientKey, req.PriceID, req.SuccessPath, req.CancelPath}, "\x00")))
	return "portal-checkout-" + hex.EncodeToString(sum[:16])
}

// stripeProblem maps a failed Stripe call: rate limits, Stripe's 5xx and network trouble are
// 503 (retry later); anything else is our configuration's fault, a 500.
func stripeProblem(what string, err error) error {
	wrapped := fmt.Errorf("%s: %w", what, err)
	var se *stripe.Error
	var ne net.Error
	switch {
	case errors.As(err, &se) && (se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500):
		return problem.Unavailable("the payment provider is unavailable; retry shortly").WithCause(wrapped)
	case errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded):
		return problem.Unavailable("the payment provider is unavailable; retry shortly").WithCause(wrapped)
	}
	return wrapped
}
