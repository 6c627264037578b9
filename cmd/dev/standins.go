package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/providerfake"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// Fixed local addresses of the stand-ins (env.json points the functions at them).
const (
	stripeAddr   = "127.0.0.1:12111"
	hubspotAddr  = "127.0.0.1:3011"
	zendeskAddr  = "127.0.0.1:3012"
	supabaseAddr = "127.0.0.1:54321"
)

// controlPrefix is where the stand-ins are listed and switched (providerfake.Control).
const controlPrefix = "/_dev/providers"

// standinServer is a provider's local stand-in: what serves it and the switch that turns it down,
// rate-limited or up again.
type standinServer interface {
	http.Handler
	providerfake.Switchable
	Close()
}

// providerDef is one external service and how the dev server reaches it.
type providerDef struct {
	name string
	// credential is the variable whose presence in the process environment means "use the
	// real service"; vars are all of the provider's variables (env.json's local values of
	// them do not apply then).
	credential string
	vars       []string
	// urlVar is the variable that points the functions at the provider.
	urlVar string
	addr   string
	start  func() (standinServer, error)
}

// standins runs the providers' local stand-ins and serves the control endpoint.
type standins struct {
	providers []providerfake.Provider
	// real marks variables of providers that use their real service.
	real map[string]bool
	// urls are the stand-ins' base URLs by variable, where they differ from env.json's
	// (stand-ins on free ports).
	urls    map[string]string
	hub     *hubspotfake.Server
	desk    *zendeskfake.Server
	servers []*http.Server
	running []standinServer
	stripe  *exec.Cmd
	handler http.Handler
}

func startStandins(ctx context.Context, root string, logger *slog.Logger, envs sam.EnvFile, ephemeral bool) (*standins, error) {
	s := &standins{real: map[string]bool{}, urls: map[string]string{}}
	local := func(fn, name string) string { return envs[fn][name] }
	defs := []providerDef{
		{name: "stripe", credential: "STRIPE_API_KEY", vars: []string{"STRIPE_API_KEY", "STRIPE_API_BASE"}, urlVar: "STRIPE_API_BASE", addr: stripeAddr,
			start: func() (standinServer, error) { return s.stripeMock(ctx, root) }},
		{name: "hubspot", credential: "HUBSPOT_ACCESS_TOKEN", vars: []string{"HUBSPOT_ACCESS_TOKEN", "HUBSPOT_BASE_URL"}, urlVar: "HUBSPOT_BASE_URL", addr: hubspotAddr,
			start: func() (standinServer, error) {
				s.hub = hubspotfake.New()
				s.hub.SetAccessToken(local("CrmPushFunction", "HUBSPOT_ACCESS_TOKEN"))
				return s.hub, nil
			}},
		{name: "zendesk", credential: "ZENDESK_API_TOKEN", vars: []string{"ZENDESK_API_TOKEN", "ZENDESK_BASE_URL", "ZENDESK_EMAIL"}, urlVar: "ZENDESK_BASE_URL", addr: zendeskAddr,
			start: func() (standinServer, error) {
				s.desk = zendeskfake.New(local("SupportPushFunction", "ZENDESK_EMAIL"), local("SupportPushFunction", "ZENDESK_API_TOKEN"))
				return s.desk, nil
			}},
		{name: "supabase", credential: "SUPABASE_SERVICE_ROLE_KEY", vars: []string{"SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL", "SUPABASE_JWT_SECRET"}, urlVar: "SUPABASE_URL", addr: supabaseAddr,
			start: func() (standinServer, error) {
				return demo.NewSupabase(local("TicketCreateFunction", "SUPABASE_SERVICE_ROLE_KEY")), nil
			}},
	}
	for _, d := range defs {
		p := providerfake.Provider{Name: d.name, URL: "http://" + d.addr}
		if v := os.Getenv(d.credential); v != "" {
			p.Note = "the real service (" + d.credential + " is set)"
			for _, name := range d.vars {
				s.real[name] = true
			}
			s.providers = append(s.providers, p)
			continue
		}
		addr := d.addr
		if ephemeral {
			addr = "127.0.0.1:0"
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			p.Note = fmt.Sprintf("something already listens on %s; using it", d.addr)
			logger.Warn("stand-in port busy; using what listens there", "provider", d.name, "addr", d.addr)
			s.providers = append(s.providers, p)
			continue
		}
		h, err := d.start()
		if err != nil {
			_ = l.Close()
			s.Close()
			return nil, fmt.Errorf("start the %s stand-in: %w", d.name, err)
		}
		p.Switch = h
		if ephemeral {
			p.URL = "http://" + l.Addr().String()
			s.urls[d.urlVar] = p.URL
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		s.servers = append(s.servers, srv)
		s.running = append(s.running, h)
		s.providers = append(s.providers, p)
	}
	control := logSwitches(logger, providerfake.Control(controlPrefix, s.providers...))
	mux := http.NewServeMux()
	mux.Handle(controlPrefix, control)
	mux.Handle(controlPrefix+"/", control)
	mux.HandleFunc("GET "+controlPrefix+"/hubspot/upserts", s.upserts)
	mux.HandleFunc("GET "+controlPrefix+"/hubspot/associations", s.associations)
	s.handler = mux
	return s, nil
}

func (s *standins) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// logSwitches notes every switch request in the dev server's log.
func logSwitches(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			logger.Info("stand-in switch", "path", r.URL.Path)
		}
		next.ServeHTTP(w, r)
	})
}

// Upsert is one record the HubSpot stand-in received, as GET /_dev/providers/hubspot/upserts
// lists it: what `make load` matches to the webhook that caused it, to time the CRM push.
type Upsert struct {
	At         time.Time `json:"at"`
	ObjectType string    `json:"object_type"`
	ID         string    `json:"id"`
}

// upserts lists what the HubSpot stand-in received (404 when HubSpot is not a stand-in).
func (s *standins) upserts(w http.ResponseWriter, _ *http.Request) {
	if s.hub == nil {
		http.Error(w, "hubspot is not a local stand-in here", http.StatusNotFound)
		return
	}
	recorded := s.hub.Upserts()
	out := make([]Upsert, 0, len(recorded))
	for _, u := range recorded {
		out = append(out, Upsert{At: u.At, ObjectType: u.ObjectType, ID: u.ID})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// associations lists the contact-to-company associations the HubSpot stand-in holds (404 when
// HubSpot is not a stand-in): which companies (tenants) each contact belongs to.
func (s *standins) associations(w http.ResponseWriter, _ *http.Request) {
	if s.hub == nil {
		http.Error(w, "hubspot is not a local stand-in here", http.StatusNotFound)
		return
	}
	out := s.hub.Associations()
	if out == nil {
		out = []hubspotfake.Association{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// describe is how the welcome text shows a provider.
func describe(p providerfake.Provider) string {
	if p.Switch == nil {
		return p.Note
	}
	return fmt.Sprintf("local stand-in on %s (%s)", p.URL, p.Switch.Mode())
}

// stripeFront fronts stripe-mock (which has no modes) and answers as Stripe's API does when
// switched down or rate-limited.
type stripeFront struct {
	providerfake.Switch
	next http.Handler
}

func (f *stripeFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, ok := f.Enter(r)
	if !ok {
		return
	}
	switch mode {
	case providerfake.ModeDown:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"type":"api_error","message":"The Stripe API is temporarily unavailable."}}`))
	case providerfake.ModeRateLimited:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests hit the API too quickly."}}`))
	default:
		f.next.ServeHTTP(w, r)
	}
}

// stripeMockStart bounds stripe-mock's start (it loads Stripe's whole OpenAPI spec first):
// generous, because on a machine busy with a test run it takes far longer than its usual
// second, and a slow start is no reason to fail.
const stripeMockStart = 60 * time.Second

// stripeMock starts Stripe's own mock (pinned as a Go tool) on a free port and fronts it.
func (s *standins) stripeMock(ctx context.Context, root string) (standinServer, error) {
	path, err := exec.CommandContext(ctx, "go", "tool", "-n", "stripe-mock").Output()
	if err != nil {
		return nil, fmt.Errorf("build stripe-mock (go tool -n stripe-mock): %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a port for stripe-mock: %w", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cmd := exec.Command(strings.TrimSpace(string(path)), "-http-addr", addr, "-https-addr", "127.0.0.1:0")
	cmd.Dir = root
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start stripe-mock: %w", err)
	}
	s.stripe = cmd
	deadline := time.Now().Add(stripeMockStart)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("stripe-mock did not start within %s", stripeMockStart)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &stripeFront{next: httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})}, nil
}

// Close stops every stand-in and stripe-mock.
func (s *standins) Close() {
	for _, h := range s.running {
		h.Close()
	}
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	if s.stripe != nil && s.stripe.Process != nil {
		_ = s.stripe.Process.Kill()
		_ = s.stripe.Wait()
	}
}
