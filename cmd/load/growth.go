package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/standin"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/portal/growth"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/supabase"
)

// growthOptions are the flags of scenario growth.
type growthOptions struct {
	databaseURL  string
	sizes        []int
	otherTenants int
	requests     int
	reuse        bool
	benchmarks   string
	commit       string
}

// growthRead is one read the harness times.
type growthRead struct {
	name string
	path func(w growth.World) string
	// member: as the tenant's member (no health section) instead of its owner.
	member bool
}

var growthReads = []growthRead{
	{name: "GET /v1/account (owner)", path: func(growth.World) string { return "/v1/account" }},
	{name: "GET /v1/account (member)", path: func(growth.World) string { return "/v1/account" }, member: true},
	{name: "GET /v1/tickets (first page)", path: func(growth.World) string { return "/v1/tickets" }},
	{name: "GET /v1/tickets (10,000 deep, by cursor)", path: func(w growth.World) string {
		if w.DeepCursor == nil {
			return ""
		}
		return "/v1/tickets?cursor=" + portal.Cursor{CreatedAt: w.DeepCursor.CreatedAt, ID: w.DeepCursor.ID}.Encode()
	}},
	{name: "GET /v1/tickets/{id}", path: func(w growth.World) string { return "/v1/tickets/" + w.TicketID.String() }},
}

// runGrowth is scenario growth: for each size, a database of its own holding one tenant grown
// to that many rows of every kind beside o.otherTenants small ones (shared/portal/growth, COPY),
// then each portal read, served by portal-read's own handler over loopback HTTP, timed one
// request at a time (warm: a first round is not counted). It prints a table of p50/p95 per
// read and size and, for the largest size, each query's EXPLAIN (ANALYZE, BUFFERS) as the
// user; with -benchmarks it writes both into that file's "## Portal reads" section.
func runGrowth(ctx context.Context, o growthOptions) error {
	if o.requests < growthRounds {
		// Fewer than one timed request a round would leave a read with no latencies to report.
		return fmt.Errorf("growth: -requests must be at least %d (one per round), got %d", growthRounds, o.requests)
	}
	o.commit = commit() // now: the tree may change while a long run seeds
	type sized struct {
		size  int
		pool  *pgxpool.Pool
		world growth.World
		srv   *readServer
	}
	var worlds []sized
	defer func() {
		for _, w := range worlds {
			w.srv.Close()
			w.pool.Close()
		}
	}()
	for _, size := range o.sizes {
		pool, world, err := growthWorld(ctx, o, size)
		if err != nil {
			return err
		}
		srv, err := newReadServer(ctx, pool, world)
		if err != nil {
			pool.Close()
			return err
		}
		worlds = append(worlds, sized{size: size, pool: pool, world: world, srv: srv})
	}
	// Rounds that visit every size in turn, so a burst of load from the machine's other users
	// lands on all sizes alike instead of on whichever size was being timed.
	const rounds = growthRounds
	fmt.Fprintf(os.Stderr, "growth: timing %d requests per read and size, in %d interleaved rounds\n", o.requests, rounds)
	lat := map[string]map[int][]time.Duration{}
	for round := range rounds + 1 {
		for _, w := range worlds {
			for _, r := range growthReads {
				n := o.requests / rounds
				if round == 0 {
					n = max(o.requests/10, 1) // warm-up, not counted
				}
				got, err := w.srv.time(ctx, r, n)
				if err != nil {
					return err
				}
				if got == nil || round == 0 {
					continue
				}
				if lat[r.name] == nil {
					lat[r.name] = map[int][]time.Duration{}
				}
				lat[r.name][w.size] = append(lat[r.name][w.size], got...)
			}
		}
	}
	results := map[string]map[int][2]time.Duration{}
	for name, bySize := range lat {
		results[name] = map[int][2]time.Duration{}
		for size, l := range bySize {
			sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
			results[name][size] = [2]time.Duration{pct(l, 50), pct(l, 95)}
		}
	}
	last := worlds[len(worlds)-1]
	plans, err := last.srv.explain(ctx, last.pool)
	if err != nil {
		return err
	}
	section := growthSection(o, results, plans)
	fmt.Print(section)
	if o.benchmarks != "" {
		return writeBenchmarks(o.benchmarks, "growth", section)
	}
	return nil
}

// growthWorld makes (or with -reuse finds) the database of one size.
func growthWorld(ctx context.Context, o growthOptions, size int) (*pgxpool.Pool, growth.World, error) {
	cfg, err := pgx.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, growth.World{}, fmt.Errorf("growth: -database: %w", err)
	}
	name := fmt.Sprintf("portal_growth_%d", size)
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, growth.World{}, fmt.Errorf("growth: connect: %w", err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, name).Scan(&exists); err != nil {
		return nil, growth.World{}, fmt.Errorf("growth: look for %s: %w", name, err)
	}
	fresh := !(exists && o.reuse)
	if fresh {
		if _, err := admin.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
			return nil, growth.World{}, fmt.Errorf("growth: drop %s: %w", name, err)
		}
		if _, err := admin.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
			return nil, growth.World{}, fmt.Errorf("growth: create %s: %w", name, err)
		}
	}
	u, err := neturl.Parse(o.databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, growth.World{}, fmt.Errorf("growth: -database must be a postgres:// URL")
	}
	u.Path = "/" + name
	pool, err := db.Open(ctx, u.String(), db.Options{MaxConns: 8, ApplicationName: "load-growth"})
	if err != nil {
		return nil, growth.World{}, err
	}
	// Never seed anything but the harness's own database.
	var current string
	if err := pool.QueryRow(ctx, `select current_database()`).Scan(&current); err != nil || current != name {
		pool.Close()
		return nil, growth.World{}, fmt.Errorf("growth: connected to %q, not %q; refusing to seed it", current, name)
	}
	if !fresh {
		// Migrations added since the seed apply to it (the seeded rows stay).
		ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
		if err == nil {
			_, err = db.Migrate(ctx, pool, ms)
		}
		if err != nil {
			pool.Close()
			return nil, growth.World{}, err
		}
		w, err := growth.Find(ctx, pool)
		if err != nil {
			pool.Close()
			return nil, growth.World{}, err
		}
		return pool, w, nil
	}
	if err := standin.Apply(ctx, pool); err != nil {
		pool.Close()
		return nil, growth.World{}, err
	}
	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	if err == nil {
		_, err = db.Migrate(ctx, pool, ms)
	}
	if err != nil {
		pool.Close()
		return nil, growth.World{}, err
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "growth: seeding one tenant with %d rows of each kind beside %d tenants...\n", size, o.otherTenants)
	w, err := growth.Seed(ctx, pool, growth.Size{Rows: size, OtherTenants: o.otherTenants, SmallRows: 20, Progress: os.Stderr})
	if err != nil {
		pool.Close()
		return nil, growth.World{}, err
	}
	fmt.Fprintf(os.Stderr, "growth: seeded in %s\n", time.Since(start).Round(time.Second))
	return pool, w, nil
}

// readServer is portal-read's own handler on a loopback port, over one size's database.
type readServer struct {
	*httptest.Server
	world  growth.World
	tokens map[bool]string
}

func newReadServer(ctx context.Context, pool *pgxpool.Pool, w growth.World) (*readServer, error) {
	env := map[string]string{"SUPABASE_URL": demo.SupabaseURL, "SUPABASE_JWT_SECRET": demo.JWTSecret}
	h, err := portal.ReadFunction.Handler(ctx, function.Deps{
		Name: "portal-read", Pool: pool, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	})
	if err != nil {
		return nil, err
	}
	s := &readServer{world: w, tokens: map[bool]string{}}
	for member, user := range map[bool]uuid.UUID{false: w.OwnerID, true: w.MemberID} {
		if s.tokens[member], err = userToken(user); err != nil {
			return nil, err
		}
	}
	s.Server = httptest.NewServer(h)
	return s, nil
}

// growthRounds is how many interleaved rounds the timed requests are spread over.
const growthRounds = 10

// time sends n requests of read r one at a time and returns their latencies (nil when the
// world has nothing for r, such as a 10,000-deep page of a smaller tenant).
func (s *readServer) time(ctx context.Context, r growthRead, n int) ([]time.Duration, error) {
	path := r.path(s.world)
	if path == "" {
		return nil, nil
	}
	client := s.Client()
	lat := make([]time.Duration, 0, n)
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+s.tokens[r.member])
		start := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("growth: %s: %w", r.name, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("growth: %s answered %d", r.name, res.StatusCode)
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// explain is every read's plan as the owner (portal.ExplainReads).
func (s *readServer) explain(ctx context.Context, pool *pgxpool.Pool) ([]portal.ReadPlan, error) {
	v, err := auth.NewVerifier(ctx, auth.Config{SupabaseURL: demo.SupabaseURL, JWTSecret: demo.JWTSecret, DisableJWKS: true})
	if err != nil {
		return nil, err
	}
	id, err := v.Verify(ctx, s.tokens[false])
	if err != nil {
		return nil, err
	}
	w := s.world
	scope := tenant.Scope{TenantID: w.TenantID, UserID: w.OwnerID, Role: tenant.Owner, Identity: id}
	var deep *portal.Cursor
	if w.DeepCursor != nil {
		deep = &portal.Cursor{CreatedAt: w.DeepCursor.CreatedAt, ID: w.DeepCursor.ID}
	}
	return portal.ExplainReads(ctx, pool, scope, w.TicketID, deep)
}

// userToken is an access token for user, signed with the local development secret.
func userToken(user uuid.UUID) (string, error) {
	now := time.Now()
	tok, err := auth.MintHS256([]byte(demo.JWTSecret), auth.TokenClaims{
		Subject: user.String(), Email: "growth@example.test", Role: "authenticated", AAL: "aal1",
		SessionID: uuid.NewString(), Issuer: auth.IssuerFor(demo.SupabaseURL), Audience: []string{"authenticated"},
		IssuedAt: now, ExpiresAt: now.Add(time.Hour),
	})
	if err != nil {
		return "", fmt.Errorf("growth: mint token: %w", err)
	}
	return tok, nil
}

// growthSection is the generated part of BENCHMARKS.md: the command, the date and commit, the
// table (p50 / p95 per size, and the largest size's p50 over the smallest's) and the plans.
func growthSection(o growthOptions, results map[string]map[int][2]time.Duration, plans []portal.ReadPlan) string {
	var b strings.Builder
	sizes := make([]string, len(o.sizes))
	for i, s := range o.sizes {
		sizes[i] = strconv.Itoa(s)
	}
	fmt.Fprintf(&b, "### Growth: one tenant at %s rows beside %d tenants\n\n", strings.Join(sizes, ", "), o.otherTenants)
	fmt.Fprintf(&b, "Generated by `make load ARGS='-scenario growth -sizes %s -benchmarks BENCHMARKS.md'` on %s at commit %s.\n",
		strings.Join(sizes, ","), time.Now().UTC().Format("2006-01-02 15:04 MST"), o.commit)
	fmt.Fprintf(&b, "portal-read's handler over loopback HTTP, one request at a time, %d requests per read and size (after %d warm-up ones) in 10 rounds that visit every size in turn; p50 / p95.\n\n", o.requests, o.requests/10)
	b.WriteString("| read |")
	for _, s := range o.sizes {
		fmt.Fprintf(&b, " %s rows |", humanSize(s))
	}
	b.WriteString(" largest / smallest (p50) |\n|---|")
	for range o.sizes {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, r := range growthReads {
		row, ok := results[r.name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "| %s |", r.name)
		for _, s := range o.sizes {
			t, ok := row[s]
			if !ok {
				b.WriteString(" n/a |")
				continue
			}
			fmt.Fprintf(&b, " %s / %s |", ms(t[0]), ms(t[1]))
		}
		first, last := row[o.sizes[0]], row[o.sizes[len(o.sizes)-1]]
		if first[0] > 0 && last[0] > 0 {
			fmt.Fprintf(&b, " %.2f× |\n", float64(last[0])/float64(first[0]))
		} else {
			b.WriteString(" n/a |\n")
		}
	}
	if len(plans) > 0 {
		fmt.Fprintf(&b, "\nPlans at %s rows: every statement the route functions ran for the owner's reads, as they ran it "+
			"(their kept generic plans; auto_explain with ANALYZE and BUFFERS): the reads of the views as the user under RLS, "+
			"the membership, the owner's health and the switch to the user on the pool's role:\n", humanSize(o.sizes[len(o.sizes)-1]))
		for _, p := range plans {
			who := "as the user, under RLS"
			if !p.AsUser {
				who = "pool's role"
			}
			fmt.Fprintf(&b, "\n#### %s (%s)\n\n```\n%s\n```\n", p.Read, who, p.Text)
		}
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func humanSize(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// commit is the working tree's commit (with +dirty when files other than BENCHMARKS.md, which
// these runs write themselves, have changes), for the record.
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if exec.Command("git", "diff", "--quiet", "HEAD", "--", ".", ":!BENCHMARKS.md").Run() != nil {
		rev += "+dirty"
	}
	return rev
}

// ErrNoSection: a -benchmarks file this command cannot place its block in.
var ErrNoSection = errors.New("load: cannot place the block in the benchmarks file")

// writeBenchmarks puts block between <!-- portal-reads:<name> --> markers inside the file's
// "## Portal reads" section, adding the section (at the end) or the markers (at the section's
// end) when missing, and leaving every other section as it is.
func writeBenchmarks(path, name, block string) error {
	return writeMarked(path, "portal-reads:"+name, "## Portal reads\n", "Issue 13. What a portal read costs as a tenant grows, and how many a second the dev server serves.\n\n", block)
}

// writeMarked puts block between <!-- <marker> begin/end --> lines, in place of an earlier
// block with the same marker, else at the end of the section that starts with heading
// (adding the section, with intro, at the end of the file when it has none).
func writeMarked(path, marker, heading, intro, block string) error {
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	text := string(raw)
	begin, end := "<!-- "+marker+" begin -->\n", "<!-- "+marker+" end -->\n"
	wrapped := begin + block + end
	if i := strings.Index(text, begin); i >= 0 {
		j := strings.Index(text[i:], end)
		if j < 0 {
			return fmt.Errorf("%w: %q has no end marker", ErrNoSection, marker)
		}
		text = text[:i] + wrapped + text[i+j+len(end):]
	} else {
		i := strings.Index(text, heading)
		if i < 0 {
			if text != "" && !strings.HasSuffix(text, "\n\n") {
				text = strings.TrimRight(text, "\n") + "\n\n"
			}
			text += heading + "\n" + intro
			i = strings.Index(text, heading)
		}
		// The end of the section: the next "## " heading, or the end of the file.
		rest := text[i+len(heading):]
		k := strings.Index(rest, "\n## ")
		at := len(text)
		if k >= 0 {
			at = i + len(heading) + k + 1
		}
		text = text[:at] + wrapped + "\n" + text[at:]
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
