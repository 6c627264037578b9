package portal_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
	"github.com/portal-functions/portal-functions/shared/web"
)

type bundle struct {
	env  *tickettest.Env
	read http.Handler
	a, b tickettest.Member
}

func setup(t testing.TB) bundle {
	t.Helper()
	env := tickettest.New(t)
	h := portal.NewHandler(portal.Deps{Pool: env.Pool, Verifier: env.Issuer.Verifier(t)})
	return bundle{
		env:  env,
		read: web.Wrap(h, web.Options{Logger: slog.New(slog.DiscardHandler)}),
		a:    env.Seed(t, "Acme", "owner"),
		b:    env.Seed(t, "Globex", "owner"),
	}
}

func (b bundle) get(t testing.TB, m tickettest.Member, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if m.Token != "" {
		r.Header.Set("Authorization", "Bearer "+m.Token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	b.read.ServeHTTP(w, r)
	return w
}

func decode[T any](t testing.TB, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &v), w.Body.String())
	return v
}

func exec(t testing.TB, b bundle, sql string, args ...any) {
	t.Helper()
	_, err := b.env.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

func TestAccountTellsBillingAndSyncStateInWords(t *testing.T) {
	t.Parallel()
	paid := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	success := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
	cases := []struct {
		name     string
		arrange  func(t *testing.T, b bundle)
		billing  string
		crm      string
		helpdesk string
	}{
		{
			name:     "new tenant: empty states",
			arrange:  func(*testing.T, bundle) {},
			billing:  "no subscription yet",
			crm:      "nothing to sync to the CRM yet",
			helpdesk: "no support tickets yet",
		},
		{
			name: "paid, CRM push queued, ticket pending",
			arrange: func(t *testing.T, b bundle) {
				exec(t, b, `insert into private.billing_accounts (tenant_id, status, plan, last_payment_at, last_payment_amount, last_payment_currency)
					values ($1, 'active', 'pro', $2, 4900, 'eur')`, b.a.TenantID, paid)
				exec(t, b, `insert into private.sync_status (integration, subject, tenant_id, state, last_success_at)
					values ('crm', 'tenant:'||$1::text, $1::uuid, 'pending', $2)`, b.a.TenantID, success)
				b.env.Create(t, b.a, "Where is my invoice?")
			},
			billing:  "subscription active",
			crm:      "payment received, syncing to CRM",
			helpdesk: "support ticket pending",
		},
		{
			name: "payment failed, CRM retrying, a ticket failed",
			arrange: func(t *testing.T, b bundle) {
				exec(t, b, `insert into private.billing_accounts (tenant_id, status) values ($1, 'past_due')`, b.a.TenantID)
				exec(t, b, `insert into private.sync_status (integration, subject, tenant_id, state, last_success_at)
					values ('crm', 'tenant:'||$1::text, $1::uuid, 'retrying', $2),
					       ('helpdesk', 'ticket:x', $1::uuid, 'failed', null), ('helpdesk', 'ticket:y', $1::uuid, 'synced', $2)`, b.a.TenantID, success)
			},
			billing:  "payment failed; please update your payment method",
			crm:      "CRM update failed, we are retrying",
			helpdesk: "a support ticket could not be delivered; our team has been alerted",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tc.arrange(t, b)
			// Tenant B's state must never leak into A's view.
			exec(t, b, `insert into private.billing_accounts (tenant_id, status) values ($1, 'canceled')`, b.b.TenantID)
			exec(t, b, `insert into private.sync_status (integration, subject, tenant_id, state) values ('crm', 'tenant:b', $1, 'failed')`, b.b.TenantID)

			w := b.get(t, b.a, "/v1/account")
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			acc := decode[portal.Account](t, w)
			require.Equal(t, b.a.TenantID, acc.Tenant.ID)
			require.Equal(t, "Acme", acc.Tenant.Name)
			require.Equal(t, "owner", acc.Role)
			require.Equal(t, tc.billing, acc.Billing.Message)
			require.Len(t, acc.Syncs, 2)
			require.Equal(t, "crm", acc.Syncs[0].Integration)
			require.Equal(t, tc.crm, acc.Syncs[0].Message)
			require.Equal(t, "helpdesk", acc.Syncs[1].Integration)
			require.Equal(t, tc.helpdesk, acc.Syncs[1].Message)
			if tc.crm != "nothing to sync to the CRM yet" {
				require.NotNil(t, acc.Syncs[0].LastSuccessAt)
				require.True(t, success.Equal(*acc.Syncs[0].LastSuccessAt), "the time of the last success is shown")
			}
		})
	}
}

func TestTicketListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var want []uuid.UUID
	for _, s := range []string{"one", "two", "three", "four", "five"} {
		want = append([]uuid.UUID{b.env.Create(t, b.a, s).ID}, want...)
	}
	b.env.Create(t, b.b, "not yours")

	var got []uuid.UUID
	cursor := ""
	pages := 0
	for {
		target := "/v1/tickets?limit=2"
		if cursor != "" {
			target += "&cursor=" + cursor
		}
		w := b.get(t, b.a, target)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		page := decode[portal.TicketPage](t, w)
		pages++
		for _, tk := range page.Tickets {
			got = append(got, tk.ID)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	require.Equal(t, 3, pages)
	require.Equal(t, want, got, "newest first, each ticket once, only the tenant's")

	w := b.get(t, b.a, "/v1/tickets")
	page := decode[portal.TicketPage](t, w)
	require.Len(t, page.Tickets, 5)
	require.Nil(t, page.NextCursor)
	require.Equal(t, "support ticket pending", page.Tickets[0].StatusMessage)
}

func TestTicketListRefusesBadLimitsAndCursors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, q := range []string{"limit=0", "limit=101", "limit=ten", "cursor=%25%25", "cursor=bm90LWpzb24", "cursor=e30"} {
		t.Run(q, func(t *testing.T) {
			t.Parallel()
			w := b.get(t, b.a, "/v1/tickets?"+q)
			require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
			require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
		})
	}
}

func TestTicketByIDShowsTextAndAttachments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	created := b.env.Create(t, b.a, "<img src=x onerror=alert(1)>",
		ticket.AttachmentRequest{Name: "a.pdf", Size: 10, ContentType: "application/pdf"})

	w := b.get(t, b.a, "/v1/tickets/"+created.ID.String())
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "application/json", w.Header().Get("Content-Type"), "JSON, never HTML")
	got := decode[portal.Ticket](t, w)
	require.Equal(t, "<img src=x onerror=alert(1)>", got.Subject)
	require.Equal(t, "Body of <img src=x onerror=alert(1)>", got.Body)
	require.Equal(t, []portal.Attachment{{ID: created.Attachments[0].ID, Name: "a.pdf", Size: 10, ContentType: "application/pdf"}}, got.Attachments)
	require.Equal(t, "private, no-store", w.Header().Get("Cache-Control"))
	require.Contains(t, w.Header().Values("Vary"), "Authorization")
}

// R4: tenant A's user asks for each of tenant B's ids wherever an id can go and never sees B.
func TestIDORSweep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mine := b.env.Create(t, b.a, "A's own ticket")
	theirs := []ticket.Created{
		b.env.Create(t, b.b, "B secret one", ticket.AttachmentRequest{Name: "b.pdf", Size: 5, ContentType: "application/pdf"}),
		b.env.Create(t, b.b, "B secret two"),
	}
	var bIDs []string
	for _, c := range theirs {
		bIDs = append(bIDs, c.ID.String())
		for _, a := range c.Attachments {
			bIDs = append(bIDs, a.ID.String())
		}
	}
	bIDs = append(bIDs, b.b.TenantID.String(), b.b.UserID.String())

	unknown := b.get(t, b.a, "/v1/tickets/"+uuid.NewString())
	require.Equal(t, http.StatusNotFound, unknown.Code)
	unknownBody := withoutRequestID(t, unknown.Body.Bytes())

	noLeak := func(t *testing.T, w *httptest.ResponseRecorder) {
		t.Helper()
		require.NotContains(t, w.Body.String(), "B secret")
		require.NotContains(t, w.Body.String(), b.b.TenantID.String())
		require.NotContains(t, w.Body.String(), "Globex")
	}

	for _, id := range bIDs {
		t.Run("path "+id, func(t *testing.T) {
			w := b.get(t, b.a, "/v1/tickets/"+id)
			require.Equal(t, http.StatusNotFound, w.Code)
			require.Equal(t, unknownBody, withoutRequestID(t, w.Body.Bytes()), "same body as an unknown id")
			noLeak(t, w)
		})
		t.Run("query "+id, func(t *testing.T) {
			for _, c := range theirs {
				cur := portal.Cursor{CreatedAt: c.CreatedAt.Add(time.Second), ID: c.ID}.Encode()
				w := b.get(t, b.a, "/v1/tickets?cursor="+cur+"&tenant_id="+id+"&id="+id)
				require.Equal(t, http.StatusOK, w.Code)
				page := decode[portal.TicketPage](t, w)
				require.Len(t, page.Tickets, 1)
				require.Equal(t, mine.ID, page.Tickets[0].ID)
				noLeak(t, w)
			}
		})
		t.Run("header "+id, func(t *testing.T) {
			for _, target := range []string{"/v1/account", "/v1/tickets", "/v1/tickets/" + theirs[0].ID.String()} {
				w := b.get(t, b.a, target, "X-Tenant-Id", id)
				require.Contains(t, []int{http.StatusForbidden, http.StatusNotFound}, w.Code, target)
				noLeak(t, w)
			}
		})
		t.Run("body "+id, func(t *testing.T) {
			for _, field := range []string{"tenant_id", "id", "user_id", "ticket_id"} {
				body := `{"subject":"s","body":"b","category":"other","` + field + `":"` + id + `"}`
				w := b.env.Post(t, b.a, uuid.NewString(), []byte(body))
				require.Equal(t, http.StatusBadRequest, w.Code, "an id in the body is refused, never used")
				noLeak(t, w)
			}
		})
	}
	var n int
	require.NoError(t, b.env.Pool.QueryRow(context.Background(), `select count(*) from public.tickets where tenant_id = $1`, b.b.TenantID).Scan(&n))
	require.Equal(t, 2, n, "nothing was written into B")
}

func TestUnknownRouteIsAProblem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.get(t, b.a, "/v1/nothing")
	require.Equal(t, http.StatusNotFound, w.Code)
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	require.Equal(t, http.StatusUnauthorized, b.get(t, tickettest.Member{}, "/v1/account").Code)
}

func withoutRequestID(t testing.TB, body []byte) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	delete(m, "request_id")
	out, _ := json.Marshal(m)
	return strings.TrimSpace(string(out))
}
