package tenant_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/web"
)

// bundle is two tenants with one member each, a user in both, a user in none, and a user whose
// only membership is disabled; identities are verified from real tokens.
type bundle struct {
	pool     *pgxpool.Pool
	iss      *authtest.Issuer
	verifier *auth.Verifier

	tenantA, tenantB           uuid.UUID
	userA, userB, both, nobody uuid.UUID
	disabled                   uuid.UUID
}

func setup(t *testing.T) bundle {
	t.Helper()
	iss := authtest.New(t)
	b := bundle{
		pool:     dbtest.New(t),
		iss:      iss,
		verifier: iss.Verifier(t),
		tenantA:  uuid.New(), tenantB: uuid.New(),
		userA: uuid.New(), userB: uuid.New(), both: uuid.New(), nobody: uuid.New(), disabled: uuid.New(),
	}
	ctx := context.Background()
	_, err := b.pool.Exec(ctx, `
		insert into public.tenants (id, name) values ($1, 'Acme'), ($2, 'Globex');
		`, b.tenantA, b.tenantB)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `
		insert into public.memberships (tenant_id, user_id, role, disabled_at) values
			($1, $3, 'admin', null), ($2, $4, 'owner', null),
			($1, $5, 'member', null), ($2, $5, 'owner', null),
			($1, $6, 'owner', now())`,
		b.tenantA, b.tenantB, b.userA, b.userB, b.both, b.disabled)
	require.NoError(t, err)
	return b
}

// identity verifies a freshly minted token for user, as auth.Require would.
func (b bundle) identity(t *testing.T, user uuid.UUID) auth.Identity {
	t.Helper()
	id, err := b.verifier.Verify(context.Background(), b.iss.Token(t, user))
	require.NoError(t, err)
	return id
}

func problemOf(t *testing.T, err error) *problem.Problem {
	t.Helper()
	var p *problem.Problem
	require.ErrorAs(t, err, &p)
	return p
}

func TestResolveFindsTheActiveMembership(t *testing.T) {
	t.Parallel()
	b := setup(t)

	cases := []struct {
		name       string
		user       uuid.UUID
		header     string
		wantTenant uuid.UUID
		wantRole   tenant.Role
		wantStatus int
		wantErr    error
	}{
		{name: "only tenant needs no header", user: b.userA, wantTenant: b.tenantA, wantRole: tenant.Admin},
		{name: "own tenant named in the header", user: b.userA, header: b.tenantA.String(), wantTenant: b.tenantA, wantRole: tenant.Admin},
		{name: "header is case-insensitive hex", user: b.userB, header: upper(b.tenantB.String()), wantTenant: b.tenantB, wantRole: tenant.Owner},
		{name: "user in several tenants picks one", user: b.both, header: b.tenantB.String(), wantTenant: b.tenantB, wantRole: tenant.Owner},
		{name: "user in several tenants must pick", user: b.both, wantStatus: 400, wantErr: tenant.ErrTenantRequired},
		{name: "another tenant in the header", user: b.userA, header: b.tenantB.String(), wantStatus: 403, wantErr: tenant.ErrNotMember},
		{name: "a tenant that does not exist", user: b.userA, header: uuid.NewString(), wantStatus: 403, wantErr: tenant.ErrNotMember},
		{name: "member of no tenant", user: b.nobody, wantStatus: 403, wantErr: tenant.ErrNotMember},
		{name: "disabled membership", user: b.disabled, wantStatus: 403, wantErr: tenant.ErrNotMember},
		{name: "disabled membership named in the header", user: b.disabled, header: b.tenantA.String(), wantStatus: 403, wantErr: tenant.ErrNotMember},
		{name: "header is not a uuid", user: b.userA, header: "acme", wantStatus: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := b.identity(t, tc.user)
			s, err := tenant.Resolve(context.Background(), b.pool, id, tc.header)
			if tc.wantStatus != 0 {
				require.Equal(t, tc.wantStatus, problemOf(t, err).Status)
				if tc.wantErr != nil {
					require.ErrorIs(t, err, tc.wantErr)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantTenant, s.TenantID)
			require.Equal(t, tc.user, s.UserID)
			require.Equal(t, tc.wantRole, s.Role)
			require.Equal(t, id, s.Identity)
		})
	}
}

func TestResolveDoesNotRevealWhetherATenantExists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.identity(t, b.userA)

	_, errOther := tenant.Resolve(context.Background(), b.pool, id, b.tenantB.String())
	_, errMissing := tenant.Resolve(context.Background(), b.pool, id, uuid.NewString())
	other, missing := problemOf(t, errOther), problemOf(t, errMissing)
	require.Equal(t, missing.Status, other.Status)
	require.Equal(t, missing.Type, other.Type)
	require.Equal(t, missing.Detail, other.Detail)
}

func TestResolveRefusesAnIdentityWithoutAUser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := tenant.Resolve(context.Background(), b.pool, auth.Identity{}, b.tenantA.String())
	require.ErrorIs(t, err, tenant.ErrNotMember)
}

func TestRequireAllowsOnlyTheListedRoles(t *testing.T) {
	t.Parallel()
	s := func(r tenant.Role) tenant.Scope {
		return tenant.Scope{TenantID: uuid.New(), UserID: uuid.New(), Role: r}
	}
	cases := []struct {
		name  string
		scope tenant.Scope
		roles []tenant.Role
		ok    bool
	}{
		{name: "owner for owner or admin", scope: s(tenant.Owner), roles: []tenant.Role{tenant.Owner, tenant.Admin}, ok: true},
		{name: "admin for owner or admin", scope: s(tenant.Admin), roles: []tenant.Role{tenant.Owner, tenant.Admin}, ok: true},
		{name: "member for owner or admin", scope: s(tenant.Member), roles: []tenant.Role{tenant.Owner, tenant.Admin}},
		{name: "admin for owner only", scope: s(tenant.Admin), roles: []tenant.Role{tenant.Owner}},
		{name: "any member when no role is listed", scope: s(tenant.Member), ok: true},
		{name: "an empty scope never passes", scope: tenant.Scope{Role: tenant.Owner}, roles: []tenant.Role{tenant.Owner}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.scope.Require(tc.roles...)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Equal(t, http.StatusForbidden, problemOf(t, err).Status)
		})
	}
}

func TestMiddlewareScopesARequestFromItsTokenAndMembership(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var logs telemetrytest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))

	// The handler reads tickets as the user: RLS, not the handler, keeps tenant B out.
	_, err := b.pool.Exec(context.Background(), `
		insert into public.tickets (tenant_id, user_id, subject, body, category, priority) values
			($1, $3, 'A ticket', 'b', 'other', 'low'), ($2, $4, 'B ticket', 'b', 'other', 'low')`,
		b.tenantA, b.tenantB, b.userA, b.userB)
	require.NoError(t, err)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := tenant.FromContext(r.Context())
		require.True(t, ok)
		var subjects []string
		err := tenant.ReadAsUser(r.Context(), b.pool, s, func(tx pgx.Tx) error {
			rows, err := tx.Query(r.Context(), `select subject from public.tickets order by subject`)
			if err != nil {
				return err
			}
			subjects, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			web.Error(w, r, err)
			return
		}
		web.JSON(w, http.StatusOK, map[string]any{"tenant": s.TenantID, "role": s.Role, "subjects": subjects})
	})
	srv := httptest.NewServer(web.Wrap(auth.Require(b.verifier)(tenant.Middleware(b.pool)(h)), web.Options{Logger: logger}))
	t.Cleanup(srv.Close)

	call := func(t *testing.T, token, header string) (*http.Response, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/tickets", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		if header != "" {
			req.Header.Set(tenant.Header, header)
		}
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		return res, body
	}

	res, body := call(t, b.iss.Token(t, b.userA), "")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, b.tenantA.String(), body["tenant"])
	require.Equal(t, "admin", body["role"])
	require.Equal(t, []any{"A ticket"}, body["subjects"])
	require.Contains(t, logs.String(), `"tenant_id":"`+b.tenantA.String()+`"`)

	res, body = call(t, b.iss.Token(t, b.both), b.tenantB.String())
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, []any{"B ticket"}, body["subjects"])

	res, body = call(t, b.iss.Token(t, b.userA), b.tenantB.String())
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
	require.Equal(t, problem.TypeForbidden, body["type"])

	res, _ = call(t, b.iss.Token(t, b.both), "")
	require.Equal(t, http.StatusBadRequest, res.StatusCode)

	res, _ = call(t, "not-a-token", b.tenantA.String())
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "no scope without a verified identity")
}

func TestMiddlewareWithoutAuthInFrontIsAServerError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	called := false
	h := tenant.Middleware(b.pool)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	rec := httptest.NewRecorder()
	web.Wrap(h, web.Options{Logger: slog.New(slog.DiscardHandler)}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.False(t, called)
}

func TestAsUserNeedsTheScopesOwnVerifiedClaims(t *testing.T) {
	t.Parallel()
	b := setup(t)
	idA := b.identity(t, b.userA)
	idB := b.identity(t, b.userB)

	cases := []struct {
		name    string
		scope   tenant.Scope
		wantErr error
	}{
		{name: "no claims", scope: tenant.Scope{TenantID: b.tenantA, UserID: b.userA, Role: tenant.Admin,
			Identity: auth.Identity{UserID: b.userA}}, wantErr: tenant.ErrNoClaims},
		{name: "another user's claims", scope: tenant.Scope{TenantID: b.tenantA, UserID: b.userA, Role: tenant.Admin,
			Identity: idB}, wantErr: tenant.ErrClaimsMismatch},
		{name: "claims that are not JSON", scope: tenant.Scope{TenantID: b.tenantA, UserID: b.userA,
			Identity: auth.Identity{UserID: b.userA, Claims: json.RawMessage(`nope`)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ran := false
			err := tenant.ReadAsUser(context.Background(), b.pool, tc.scope, func(pgx.Tx) error { ran = true; return nil })
			require.Error(t, err)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			}
			require.False(t, ran, "nothing runs unless it runs as the user")
		})
	}

	// With the right claims, auth.uid() and the role are the user's until the transaction ends.
	s, err := tenant.Resolve(context.Background(), b.pool, idA, "")
	require.NoError(t, err)
	var uid uuid.UUID
	var role string
	require.NoError(t, tenant.ReadAsUser(context.Background(), b.pool, s, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `select auth.uid(), current_user`).Scan(&uid, &role)
	}))
	require.Equal(t, b.userA, uid)
	require.Equal(t, "authenticated", role)

	boom := errors.New("boom")
	err = tenant.ReadAsUser(context.Background(), b.pool, s, func(pgx.Tx) error { return boom })
	require.ErrorIs(t, err, boom)
}

func upper(s string) string { return string(bytes.ToUpper([]byte(s))) }

// A pooled backend can carry a session-level setting left by someone else (another user's
// request.jwt.claim.sub, which Supabase's auth.uid() reads before request.jwt.claims): AsUser
// sets every claim setting for its own transaction, so the leftover never decides who we are.
func TestAsUserWinsOverASessionLevelLeftover(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	s, err := tenant.Resolve(ctx, b.pool, b.identity(t, b.userA), "")
	require.NoError(t, err)
	conn, err := b.pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `select set_config('request.jwt.claim.sub', $1, false), set_config('request.jwt.claim.role', 'service_role', false),
		set_config('request.jwt.claim.email', 'intruder@example.test', false), set_config('request.jwt.claim', '{"sub":"`+b.userB.String()+`"}', false)`,
		b.userB.String())
	require.NoError(t, err)

	var uid uuid.UUID
	var role, email, jwtSub string
	require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tenant.AsUser(ctx, tx, s); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `select auth.uid(), auth.role(), coalesce(auth.email(), ''), auth.jwt()->>'sub'`).Scan(&uid, &role, &email, &jwtSub)
	}))
	require.Equal(t, b.userA, uid)
	require.Equal(t, "authenticated", role)
	require.NotEqual(t, "intruder@example.test", email)
	require.Equal(t, b.userA.String(), jwtSub)
	// The transaction's settings end with it; the session's own are back (and ours never leak).
	var after string
	require.NoError(t, conn.QueryRow(ctx, `select current_setting('request.jwt.claim.sub', true)`).Scan(&after))
	require.Equal(t, b.userB.String(), after)
}
