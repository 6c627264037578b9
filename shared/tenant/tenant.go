// Package tenant decides which tenant a portal request acts for and with what role, and runs
// the request's database work as that user so Postgres RLS is a second wall behind the code.
//
// The tenant never comes from a path, query or body field: it is the verified identity plus an
// active row in public.memberships. A user in one tenant needs to say nothing; a user in
// several must pick one with the X-Tenant-Id header (400 without it: the request is incomplete,
// not forbidden), and the header is honoured only when a membership row exists. Not being a
// member of the requested tenant and the tenant not existing give the same 403 body, so a
// caller cannot probe for tenant ids.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Header is the request header a user in several tenants names one with.
const Header = "X-Tenant-Id"

// Errors of this package. Those a caller can cause are wrapped in a *problem.Problem, so
// errors.Is works on them and web.Error answers them without a mapping of its own.
var (
	// ErrNotMember: no active membership in the requested tenant (or in any tenant).
	ErrNotMember = errors.New("not an active member of the tenant")
	// ErrTenantRequired: several memberships and no X-Tenant-Id header.
	ErrTenantRequired = errors.New("several tenants and none selected")
	// ErrRole: the membership's role does not allow the action.
	ErrRole = errors.New("role does not allow the action")
	// ErrNoClaims: a scope without the verified token payload cannot act as its user.
	ErrNoClaims = errors.New("scope carries no verified claims")
	// ErrClaimsMismatch: the scope's claims name another user than the scope.
	ErrClaimsMismatch = errors.New("claims subject does not match the scope's user")
	// ErrNoIdentity: the middleware ran without auth.Require in front of it (a wiring bug).
	ErrNoIdentity = errors.New("no verified identity on the request")
)

// Role is what a member may do within a tenant.
type Role string

// The roles of public.memberships.role.
const (
	Owner  Role = "owner"
	Admin  Role = "admin"
	Member Role = "member"
)

// Scope is who acts for which tenant in this request. Data-access functions for portal
// requests take it as an argument, so forgetting the tenant does not compile.
type Scope struct {
	TenantID uuid.UUID
	UserID   uuid.UUID
	Role     Role
	Identity auth.Identity
}

// notMember is the one 403 body for "no such tenant" and "not your tenant" alike.
func notMember() *problem.Problem {
	return problem.Forbidden("you are not a member of this tenant").WithCause(ErrNotMember)
}

// Resolve finds the active membership of id's user, in the requested tenant when requested
// (the X-Tenant-Id value) is not empty, or in the user's only tenant otherwise. q reads
// memberships directly (not as the user): this is what decides the scope.
func Resolve(ctx context.Context, q db.Querier, id auth.Identity, requested string) (Scope, error) {
	if id.UserID == uuid.Nil {
		return Scope{}, notMember()
	}
	s := Scope{UserID: id.UserID, Identity: id}
	if requested != "" {
		tenantID, err := ParseRequested(requested)
		if err != nil {
			return Scope{}, err
		}
		err = q.QueryRow(ctx, `
			select role from public.memberships
			where tenant_id = $1 and user_id = $2 and disabled_at is null`,
			tenantID, id.UserID).Scan(&s.Role)
		if errors.Is(err, pgx.ErrNoRows) {
			return Scope{}, notMember()
		}
		if err != nil {
			return Scope{}, fmt.Errorf("look up membership: %w", db.Classify(err))
		}
		s.TenantID = tenantID
		return s, nil
	}
	rows, err := q.Query(ctx, `
		select tenant_id, role from public.memberships
		where user_id = $1 and disabled_at is null
		limit 2`, id.UserID)
	if err != nil {
		return Scope{}, fmt.Errorf("list memberships: %w", db.Classify(err))
	}
	type membership struct {
		TenantID uuid.UUID
		Role     Role
	}
	ms, err := pgx.CollectRows(rows, pgx.RowToStructByPos[membership])
	if err != nil {
		return Scope{}, fmt.Errorf("list memberships: %w", db.Classify(err))
	}
	switch len(ms) {
	case 0:
		return Scope{}, notMember()
	case 1:
		s.TenantID, s.Role = ms[0].TenantID, ms[0].Role
		return s, nil
	default:
		return Scope{}, chooseTenant()
	}
}

// ParseRequested reads an X-Tenant-Id value: a tenant id, or a 400 problem.
func ParseRequested(requested string) (uuid.UUID, error) {
	tenantID, err := uuid.Parse(requested)
	if err != nil {
		return uuid.Nil, problem.BadRequest("the " + Header + " header must be a tenant id (a UUID)").WithCause(err)
	}
	return tenantID, nil
}

func chooseTenant() *problem.Problem {
	return problem.BadRequest("you belong to several tenants: name one in the " + Header + " header").
		WithCause(ErrTenantRequired)
}

// The refusals of Resolve's rules as the database spells them (private.portal_scope, which
// resolves the scope inside a portal read's one statement).
const (
	RefusalNotMember    = "not_member"
	RefusalChooseTenant = "choose_tenant"
)

// Refusal is the answer Resolve gives for a refusal private.portal_scope found: the same
// problem, so a read resolved in the database answers exactly as one resolved here.
func Refusal(code string) error {
	switch code {
	case RefusalNotMember:
		return notMember()
	case RefusalChooseTenant:
		return chooseTenant()
	}
	return fmt.Errorf("tenant: unknown refusal %q", code)
}

// Require answers nil when the scope's role is one of roles, and a 403 problem otherwise.
// List every role allowed (Require(Owner, Admin)); with no roles any active member passes.
func (s Scope) Require(roles ...Role) error {
	if s.TenantID == uuid.Nil || s.UserID == uuid.Nil {
		return notMember()
	}
	if len(roles) == 0 || slices.Contains(roles, s.Role) {
		return nil
	}
	return problem.Forbidden("your role in this tenant does not allow this action").
		WithCause(fmt.Errorf("%w: %s", ErrRole, s.Role))
}

type scopeKey struct{}

// WithScope returns ctx carrying s.
func WithScope(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

// FromContext returns the scope Middleware resolved for this request.
func FromContext(ctx context.Context) (Scope, bool) {
	s, ok := ctx.Value(scopeKey{}).(Scope)
	return s, ok
}

// Middleware resolves the request's scope after auth.Require has verified its identity, stores
// it in the context and adds tenant_id and tenant_role to the request's log line. Refusals
// are answered as problems; a database outage is a 503.
func Middleware(pool *pgxpool.Pool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := auth.FromContext(r.Context())
			if !ok {
				web.Error(w, r, fmt.Errorf("tenant middleware: %w (put auth.Require in front)", ErrNoIdentity))
				return
			}
			s, err := Resolve(r.Context(), pool, id, r.Header.Get(Header))
			if err != nil {
				web.Error(w, r, err)
				return
			}
			web.AddLogAttrs(r.Context(),
				slog.String("tenant_id", s.TenantID.String()), slog.String("tenant_role", string(s.Role)))
			next.ServeHTTP(w, r.WithContext(WithScope(r.Context(), s)))
		})
	}
}

// ReadAsUser runs fn in a transaction as the scope's user (see AsUser): committed when fn
// returns nil, rolled back otherwise. Despite the name, writes through functions the user may
// execute commit too.
func ReadAsUser(ctx context.Context, pool db.Beginner, s Scope, fn func(tx pgx.Tx) error) error {
	return db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if err := AsUser(ctx, tx, s); err != nil {
			return err
		}
		return fn(tx)
	})
}

// AsUser switches tx to the role authenticated with the scope's verified claims, exactly as
// PostgREST does, until the transaction ends: RLS policies then see auth.uid() and auth.jwt()
// of the user. It also sets app.tenant_id, which narrows private.current_tenant_ids() (and so
// every tenant policy) to the scope's tenant: a user in several tenants sees only the one the
// request selected. The claims must be the verified token payload of the scope's user.
func AsUser(ctx context.Context, tx pgx.Tx, s Scope) error {
	sql, args, err := asUserStatement(s)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("act as user: set role and claims: %w", db.Classify(err))
	}
	return nil
}

// asUserStatement is the statement that makes a transaction act as the scope's user (AsUser).
func asUserStatement(s Scope) (string, []any, error) {
	claims := s.Identity.Claims
	if len(claims) == 0 {
		return "", nil, fmt.Errorf("act as user: %w", ErrNoClaims)
	}
	var c struct {
		Sub   string `json:"sub"`
		Role  string `json:"role"`
		Email string `json:"email"`
	}
	if err := json.Unmarshal(claims, &c); err != nil {
		return "", nil, fmt.Errorf("act as user: read claims: %w", err)
	}
	if sub, err := uuid.Parse(c.Sub); err != nil || sub != s.UserID {
		return "", nil, fmt.Errorf("act as user: %w", ErrClaimsMismatch)
	}
	// Supabase's auth.uid(), auth.role(), auth.email() and auth.jwt() read the older per-claim
	// settings (request.jwt.claim.sub, ..., request.jwt.claim) before request.jwt.claims, so
	// all are set for this transaction: a session-level leftover on a pooled backend must
	// never decide who the user is.
	return `
		select set_config('role', 'authenticated', true),
		       set_config('request.jwt.claims', $1, true),
		       set_config('request.jwt.claim', $1, true),
		       set_config('request.jwt.claim.sub', $3, true),
		       set_config('request.jwt.claim.role', $4, true),
		       set_config('request.jwt.claim.email', $5, true),
		       set_config('app.tenant_id', $2, true)`,
		[]any{string(claims), s.TenantID.String(), c.Sub, c.Role, c.Email}, nil
}
