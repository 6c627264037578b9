package billing

import (
	"net/http"

	"github.com/stripe/stripe-go/v76"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// DefaultPortalReturnPath is where the Customer Portal sends the browser back to when the
// request names no path.
const DefaultPortalReturnPath = "/billing"

// TypeNoBillingAccount is the problem type of a billing portal request by a tenant that has
// no Stripe customer yet (it has never checked out).
const TypeNoBillingAccount = "/problems/no-billing-account"

// BillingPortalHandler serves POST /v1/billing-portal-sessions: a Stripe Customer Portal
// session for the caller's tenant's customer, where an owner or admin changes the plan or
// the payment method of the one subscription instead of starting a second. Like checkout it
// runs behind auth.Require and tenant.Middleware; the customer comes from our records, never
// from the body.
type BillingPortalHandler struct {
	db     db.Querier
	stripe StripeAPI
	paths  returnPaths
	decode RequestDecoder
}

// NewBillingPortalHandler builds the handler; portal is checked as checkout's PortalURL is.
func NewBillingPortalHandler(q db.Querier, api StripeAPI, o CheckoutOptions) (*BillingPortalHandler, error) {
	paths, err := newReturnPaths(o.PortalURL)
	if err != nil {
		return nil, err
	}
	if o.Decode == nil {
		return nil, ErrNoDecoder
	}
	return &BillingPortalHandler{db: q, stripe: api, paths: paths, decode: o.Decode}, nil
}

// billingPortalRequest is the body; there is deliberately no customer or tenant field.
type billingPortalRequest struct {
	ReturnPath string `json:"return_path" validate:"omitempty,max=1024"`
}

// ServeHTTP checks the role and the return path, finds the tenant's customer and creates the
// session: 201 with its id and URL.
func (h *BillingPortalHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req billingPortalRequest
	scope, err := billingRequest(r, h.decode, &req)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	var fields []problem.FieldError
	returnURL := h.paths.resolve(&fields, "return_path", req.ReturnPath, DefaultPortalReturnPath)
	if len(fields) > 0 {
		web.Error(w, r, fieldsProblem(fields))
		return
	}
	customerID, err := tenantCustomer(ctx, h.db, scope.TenantID)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	if customerID == "" {
		web.Error(w, r, problem.New(http.StatusConflict, TypeNoBillingAccount, "No billing account",
			"the tenant has no Stripe customer yet; subscribe first: POST "+CheckoutPath))
		return
	}
	params := &stripe.BillingPortalSessionParams{Customer: stripe.String(customerID), ReturnURL: stripe.String(returnURL)}
	params.Context = ctx
	sess, err := h.stripe.NewBillingPortalSession(ctx, params)
	if err != nil {
		web.Error(w, r, stripeProblem("create billing portal session", err))
		return
	}
	web.JSON(w, http.StatusCreated, checkoutResponse{ID: sess.ID, URL: sess.URL})
}
