package ticket_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
	"github.com/portal-functions/portal-functions/shared/web"
)

type bundle struct {
	env *tickettest.Env
	a   tickettest.Member
}

func setup(t *testing.T) bundle {
	t.Helper()
	env := tickettest.New(t)
	return bundle{env: env, a: env.Seed(t, "Acme", "member")}
}

func validBody() ticket.CreateRequest {
	return ticket.CreateRequest{
		Subject: "Invoice <script>alert(1)</script> wrong", Body: "Our March invoice doubled.\n\n<b>not html</b>",
		Category: "billing", Priority: "urgent",
		Attachments: []ticket.AttachmentRequest{
			{Name: "../../etc/passwd invoice (1).pdf", Size: 2048, ContentType: "application/pdf"},
			{Name: "screen.png", Size: 10 << 20, ContentType: "image/png"},
		},
	}
}

type ticketRow struct {
	TenantID, UserID        uuid.UUID
	Email, Name, Status     string
	Subject, Body, Priority string
}

func countRows(t *testing.T, env *tickettest.Env, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, env.Pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func TestCreateStoresOneTicketForTheTokensTenantAndUser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	w := b.env.Post(t, b.a, "key-1", validBody())
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var out ticket.Created
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &out))
	require.Equal(t, "pending_sync", out.Status)
	require.Equal(t, "/v1/tickets/"+out.ID.String(), w.Header().Get("Location"))
	require.Equal(t, "private, no-store", w.Header().Get("Cache-Control"))

	var row ticketRow
	require.NoError(t, b.env.Pool.QueryRow(ctx, `
		select tenant_id, user_id, requester_email, requester_name, status, subject, body, priority
		from public.tickets where id = $1`, out.ID).
		Scan(&row.TenantID, &row.UserID, &row.Email, &row.Name, &row.Status, &row.Subject, &row.Body, &row.Priority))
	require.Equal(t, ticketRow{
		TenantID: b.a.TenantID, UserID: b.a.UserID, Email: b.a.Email, Name: "Ada Acme", Status: "pending_sync",
		Subject: validBody().Subject, Body: validBody().Body, Priority: "urgent",
	}, row, "text is stored exactly as sent, never interpreted")

	require.Len(t, out.Attachments, 2)
	for i, a := range out.Attachments {
		var path string
		require.NoError(t, b.env.Pool.QueryRow(ctx, `select object_path from public.ticket_attachments where id = $1 and ticket_id = $2 and tenant_id = $3`,
			a.ID, out.ID, b.a.TenantID).Scan(&path))
		prefix := b.a.TenantID.String() + "/" + out.ID.String() + "/" + a.ID.String() + "-"
		require.True(t, strings.HasPrefix(path, prefix), path)
		require.NotContains(t, strings.TrimPrefix(path, prefix), "/", "a file name cannot climb out of its folder")
		require.Equal(t, validBody().Attachments[i].Name, a.Name)
		require.True(t, a.ExpiresAt.After(out.CreatedAt))

		// The URL lets the browser upload without any credential, to exactly that path.
		req, err := http.NewRequest(http.MethodPut, a.UploadURL, strings.NewReader("file"))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, ok := b.env.Storage.Object(tickettest.Bucket, path)
		require.True(t, ok)
	}

	require.Equal(t, 1, countRows(t, b.env, `select count(*) from private.river_job where kind = 'helpdesk_ticket' and args->>'ticket_id' = $1 and args->>'tenant_id' = $2`,
		out.ID.String(), b.a.TenantID.String()))
	require.Equal(t, 1, countRows(t, b.env, `select count(*) from private.sync_status where integration = 'helpdesk' and subject = $1 and state = 'pending'`,
		"ticket:"+out.ID.String()))
}

func TestIdempotencyKeyReplaysOrRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)

	first := b.env.Post(t, b.a, "same-key", validBody())
	require.Equal(t, http.StatusCreated, first.Code, first.Body.String())

	again := b.env.Post(t, b.a, "same-key", validBody())
	require.Equal(t, http.StatusCreated, again.Code)
	require.JSONEq(t, first.Body.String(), again.Body.String(), "a retry gets the very same answer")
	require.Equal(t, "true", again.Header().Get("Idempotent-Replayed"))

	other := validBody()
	other.Subject = "Something else"
	reused := b.env.Post(t, b.a, "same-key", other)
	require.Equal(t, http.StatusUnprocessableEntity, reused.Code)
	require.Equal(t, "application/problem+json", reused.Header().Get("Content-Type"))

	missing := b.env.Post(t, b.a, "", validBody())
	require.Equal(t, http.StatusBadRequest, missing.Code)

	// Another user of the same tenant has keys of their own.
	colleague := b.env.Seed(t, "Other", "member")
	require.Equal(t, http.StatusCreated, b.env.Post(t, colleague, "same-key", validBody()).Code)

	require.Equal(t, 1, countRows(t, b.env, `select count(*) from public.tickets where tenant_id = $1`, b.a.TenantID))
}

func TestFiftyConcurrentIdenticalSubmissionsGiveOneTicket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := validBody()
	body.Attachments = nil

	var wg sync.WaitGroup
	codes := make([]int, 50)
	ids := make([]string, 50)
	for i := range 50 {
		wg.Go(func() {
			w := b.env.Post(t, b.a, "burst-key", body)
			codes[i] = w.Code
			if w.Code == http.StatusCreated {
				var out ticket.Created
				if json.Unmarshal(w.Body.Bytes(), &out) == nil {
					ids[i] = out.ID.String()
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, c := range codes {
		require.Contains(t, []int{http.StatusCreated, http.StatusConflict}, c, "request %d", i)
		if c == http.StatusCreated {
			seen[ids[i]] = true
		}
	}
	require.Len(t, seen, 1, "every 201 names the same ticket")
	require.Equal(t, 1, countRows(t, b.env, `select count(*) from public.tickets where tenant_id = $1`, b.a.TenantID))
	require.Equal(t, 1, countRows(t, b.env, `select count(*) from private.river_job where kind = 'helpdesk_ticket'`))
}

func TestInvalidRequestsWriteNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := strings.Repeat("é", 201)
	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{name: "unknown field such as a tenant id", body: []byte(`{"subject":"s","body":"b","category":"billing","tenant_id":"` + uuid.NewString() + `"}`), status: 400},
		{name: "malformed JSON", body: []byte(`{"subject":`), status: 400},
		{name: "subject too long (runes)", body: ticket.CreateRequest{Subject: long, Body: "b", Category: "billing"}, status: 422, field: "subject"},
		{name: "blank subject", body: ticket.CreateRequest{Subject: "   ", Body: "b", Category: "billing"}, status: 422, field: "subject"},
		{name: "NUL in body", body: ticket.CreateRequest{Subject: "s", Body: "a\x00b", Category: "billing"}, status: 422, field: "body"},
		{name: "body too long", body: ticket.CreateRequest{Subject: "s", Body: strings.Repeat("x", 20001), Category: "billing"}, status: 422, field: "body"},
		{name: "unknown category", body: ticket.CreateRequest{Subject: "s", Body: "b", Category: "sales"}, status: 422, field: "category"},
		{name: "unknown priority", body: ticket.CreateRequest{Subject: "s", Body: "b", Category: "other", Priority: "asap"}, status: 422, field: "priority"},
		{name: "six attachments", body: ticket.CreateRequest{Subject: "s", Body: "b", Category: "other", Attachments: make([]ticket.AttachmentRequest, 6)}, status: 422, field: "attachments"},
		{name: "attachment over 10 MiB", body: ticket.CreateRequest{Subject: "s", Body: "b", Category: "other",
			Attachments: []ticket.AttachmentRequest{{Name: "a.pdf", Size: 10<<20 + 1, ContentType: "application/pdf"}}}, status: 422, field: "attachments[0].size"},
		{name: "attachment type not allowed", body: ticket.CreateRequest{Subject: "s", Body: "b", Category: "other",
			Attachments: []ticket.AttachmentRequest{{Name: "a.exe", Size: 10, ContentType: "application/x-msdownload"}}}, status: 422, field: "attachments[0].content_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := b.env.Post(t, b.a, uuid.NewString(), tc.body)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
			if tc.field != "" {
				require.Contains(t, w.Body.String(), `"field":"`+tc.field+`"`)
			}
		})
	}
	t.Cleanup(func() {
		require.Equal(t, 0, countRows(t, b.env, `select count(*) from public.tickets`))
		require.Equal(t, 0, countRows(t, b.env, `select count(*) from private.river_job`), "no helpdesk job either")
		require.Equal(t, 0, b.env.Storage.Calls(), "refused before any upload URL is signed")
	})
}

func TestStorageDownOrSlowFailsBeforeAnythingIsWritten(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		arrange func(b bundle)
		restore func(b bundle)
	}{
		{
			name:    "down",
			arrange: func(b bundle) { b.env.Storage.SetMode(storagefake.ModeDown) },
			restore: func(b bundle) { b.env.Storage.SetMode(storagefake.ModeUp) },
		},
		{
			name:    "slower than the handler's bound",
			arrange: func(b bundle) { b.env.Storage.SetLatency(time.Minute) },
			restore: func(b bundle) { b.env.Storage.SetLatency(0) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			env := withDeps(t, b, func(d *ticket.Deps) { d.SignTimeout = 200 * time.Millisecond })
			tc.arrange(b)

			w := env.Post(t, b.a, "retry-me", validBody())
			require.Equal(t, http.StatusServiceUnavailable, w.Code, w.Body.String())
			require.Equal(t, 0, countRows(t, env, `select count(*) from public.tickets`))
			require.Equal(t, 0, countRows(t, env, `select count(*) from private.river_job`))

			tc.restore(b)
			w = env.Post(t, b.a, "retry-me", validBody())
			require.Equal(t, http.StatusCreated, w.Code, "the same key works once Storage is back")
			require.Equal(t, 1, countRows(t, env, `select count(*) from public.tickets`))
		})
	}
}

// withDeps is b's stack with the ticket handler rebuilt from deps that change adjusts.
func withDeps(t *testing.T, b bundle, change func(*ticket.Deps)) *tickettest.Env {
	t.Helper()
	ins, err := jobs.NewInserter(b.env.Pool)
	require.NoError(t, err)
	d := ticket.Deps{Pool: b.env.Pool, Verifier: b.env.Issuer.Verifier(t), Idempotency: idempotency.New(b.env.Pool), Jobs: ins, Uploads: b.env.Signer}
	change(&d)
	env := *b.env
	env.Handler = web.Wrap(ticket.NewHandler(d), web.Options{Logger: slog.New(slog.DiscardHandler)})
	return &env
}

func TestTicketWithoutAttachmentsNeverCallsStorage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.env.Storage.SetMode(storagefake.ModeDown)
	body := validBody()
	body.Attachments = nil
	w := b.env.Post(t, b.a, "k", body)
	require.Equal(t, http.StatusCreated, w.Code)
	require.JSONEq(t, `[]`, string(mustField(t, w.Body.Bytes(), "attachments")))
	require.Equal(t, 0, b.env.Storage.Calls())
}

func TestOnlyMembersWithAValidTokenCreate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	outsider := tickettest.Member{Token: b.env.Issuer.Token(t, uuid.New())}
	cases := []struct {
		name   string
		m      tickettest.Member
		status int
	}{
		{name: "no token", m: tickettest.Member{}, status: http.StatusUnauthorized},
		{name: "garbage token", m: tickettest.Member{Token: "not.a.jwt"}, status: http.StatusUnauthorized},
		{name: "valid token without membership", m: outsider, status: http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := b.env.Post(t, tc.m, uuid.NewString(), validBody())
			require.Equal(t, tc.status, w.Code, w.Body.String())
		})
	}
}

func TestSafeName(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, want string }{
		{name: "plain", in: "report.pdf", want: "report.pdf"},
		{name: "path traversal", in: "../../etc/passwd", want: "etc_passwd"},
		{name: "spaces and unicode", in: "Fac ture é.pdf", want: "Fac_ture_.pdf"},
		{name: "nothing left", in: "///", want: "file"},
		{name: "long keeps the extension", in: strings.Repeat("a", 300) + ".png", want: strings.Repeat("a", 96) + ".png"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, ticket.SafeName(tc.in))
		})
	}
}

func mustField(t *testing.T, body []byte, field string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(bytes.NewReader(body)).Decode(&m))
	return m[field]
}

// fakeEnqueuer is a ticket.Enqueuer whose behaviour each test sets.
type fakeEnqueuer struct {
	EnqueueHelpdeskTicketFunc func(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error
}

func (f fakeEnqueuer) EnqueueHelpdeskTicket(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error {
	return f.EnqueueHelpdeskTicketFunc(ctx, tx, tenantID, ticketID)
}

// The ticket, its attachments, its helpdesk job and the idempotency record commit together or
// not at all: when queueing the job fails, nothing is left behind, the answer says nothing of
// why, and the same key works once the queue does.
func TestTicketJobAndKeyCommitTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ins, err := jobs.NewInserter(b.env.Pool)
	require.NoError(t, err)
	var broken atomic.Bool
	broken.Store(true)
	env := withDeps(t, b, func(d *ticket.Deps) {
		d.Jobs = fakeEnqueuer{EnqueueHelpdeskTicketFunc: func(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error {
			// The real insert first, so the failure comes after rows were written in tx.
			if err := ins.EnqueueHelpdeskTicket(ctx, tx, tenantID, ticketID); err != nil || !broken.Load() {
				return err
			}
			return errors.New("river_job: disk full on tablespace secret_ts")
		}}
	})

	w := env.Post(t, b.a, "atomic", validBody())
	require.Equal(t, http.StatusInternalServerError, w.Code, w.Body.String())
	require.NotContains(t, w.Body.String(), "secret_ts", "no internals in a 5xx")
	for _, table := range []string{"public.tickets", "public.ticket_attachments", "private.river_job", "private.sync_status", "private.idempotency_keys"} {
		require.Equal(t, 0, countRows(t, env, `select count(*) from `+table), table)
	}

	broken.Store(false)
	w = env.Post(t, b.a, "atomic", validBody())
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Equal(t, 1, countRows(t, env, `select count(*) from public.tickets`))
	require.Equal(t, 2, countRows(t, env, `select count(*) from public.ticket_attachments`))
	require.Equal(t, 1, countRows(t, env, `select count(*) from private.river_job`))
	require.Equal(t, 1, countRows(t, env, `select count(*) from private.idempotency_keys where status = 'completed'`))
}

// The attachments bucket is set up from the request's own limits, so they cannot disagree.
func TestAttachmentLimitsAreTheRequestsOwn(t *testing.T) {
	t.Parallel()
	size, types := ticket.AttachmentLimits()
	require.EqualValues(t, 10<<20, size)
	require.Len(t, types, 11)
	require.Contains(t, types, "application/pdf")
}
