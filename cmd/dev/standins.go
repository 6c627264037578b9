package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
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

// Modes a stand-in can be switched to.
const (
	modeUp          = "up"
	modeDown        = "down"
	modeRateLimited = "rate-limited"
)

// ErrUnknownProvider and ErrUnknownMode answer a bad control request.
var (
	ErrUnknownProvider = errors.New("unknown provider")
	ErrUnknownMode     = errors.New("unknown mode (up, down, rate-limited)")
)

// provider is one external service and how the dev server reaches it.
type provider struct {
	name string
	// credential is the variable whose presence in the process environment means "use the
	// real service"; vars are all of the provider's variables (hidden from env.json then).
	credential string
	vars       []string
	addr       string

	mu      sync.Mutex
	mode    string
	standin bool
	note    string
	setMode func(mode string) error
	srv     *http.Server
}

func (p *provider) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.standin {
		return p.note
	}
	return fmt.Sprintf("local stand-in on http://%s (%s)", p.addr, p.mode)
}

// standins runs the providers' local stand-ins and the control endpoint.
type standins struct {
	logger    *slog.Logger
	providers []*provider
	// overrides are variables the stand-ins set; real marks variables of providers that use
	// their real service (env.json's local values must not apply to them).
	overrides map[string]string
	real      map[string]bool
	stripe    *exec.Cmd
	mux       *http.ServeMux
}

func startStandins(ctx context.Context, root string, logger *slog.Logger, envs sam.EnvFile) (*standins, error) {
	s := &standins{logger: logger, overrides: map[string]string{}, real: map[string]bool{}, mux: http.NewServeMux()}
	local := func(fn, name string) string { return envs[fn][name] }

	hub := hubspotfake.New()
	hub.SetAccessToken(local("CrmPushFunction", "HUBSPOT_ACCESS_TOKEN"))
	zd := zendeskfake.New(local("SupportPushFunction", "ZENDESK_EMAIL"), local("SupportPushFunction", "ZENDESK_API_TOKEN"))

	type def struct {
		p       *provider
		handler func() (http.Handler, error)
	}
	defs := []def{
		{&provider{name: "stripe", credential: "STRIPE_API_KEY", vars: []string{"STRIPE_API_KEY", "STRIPE_API_BASE"}, addr: stripeAddr},
			func() (http.Handler, error) { return s.stripeMock(ctx, root) }},
		{&provider{name: "hubspot", credential: "HUBSPOT_ACCESS_TOKEN", vars: []string{"HUBSPOT_ACCESS_TOKEN", "HUBSPOT_BASE_URL"}, addr: hubspotAddr,
			setMode: func(m string) error {
				mode, err := hubspotfake.ParseMode(m)
				if err == nil {
					hub.SetMode(mode)
				}
				return err
			}},
			func() (http.Handler, error) { return hub, nil }},
		{&provider{name: "zendesk", credential: "ZENDESK_API_TOKEN", vars: []string{"ZENDESK_API_TOKEN", "ZENDESK_BASE_URL", "ZENDESK_EMAIL"}, addr: zendeskAddr,
			setMode: func(m string) error {
				mode, err := zendeskfake.ParseMode(m)
				if err == nil {
					zd.SetMode(mode)
				}
				return err
			}},
			func() (http.Handler, error) { return zd, nil }},
		{&provider{name: "supabase", credential: "SUPABASE_SERVICE_ROLE_KEY", vars: []string{"SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL", "SUPABASE_JWT_SECRET"}, addr: supabaseAddr},
			func() (http.Handler, error) {
				return demo.Supabase(local("TicketCreateFunction", "SUPABASE_SERVICE_ROLE_KEY")), nil
			}},
	}
	for _, d := range defs {
		p := d.p
		p.mode = modeUp
		s.providers = append(s.providers, p)
		if v := os.Getenv(p.credential); v != "" {
			p.note = "the real service (" + p.credential + " is set)"
			for _, name := range p.vars {
				s.real[name] = true
			}
			continue
		}
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			p.note = fmt.Sprintf("something already listens on %s; using it", p.addr)
			logger.Warn("stand-in port busy; using what listens there", "provider", p.name, "addr", p.addr)
			continue
		}
		h, err := d.handler()
		if err != nil {
			_ = l.Close()
			s.Close()
			return nil, fmt.Errorf("start the %s stand-in: %w", p.name, err)
		}
		if p.setMode == nil {
			sw := &switchHandler{next: h, provider: p.name}
			p.setMode = sw.set
			h = sw
		}
		p.standin = true
		p.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = p.srv.Serve(l) }()
	}
	s.mux.HandleFunc("GET /_dev/providers", s.list)
	s.mux.HandleFunc("POST /_dev/providers/{name}/{mode}", s.switchMode)
	return s, nil
}

// stripeMock starts Stripe's own mock (pinned as a Go tool) on a free port and fronts it.
func (s *standins) stripeMock(ctx context.Context, root string) (http.Handler, error) {
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("stripe-mock did not start within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr}), nil
}

// switchHandler turns a stand-in without modes of its own down (503) or rate-limited (429 with
// Retry-After), as its provider's edge would answer.
type switchHandler struct {
	mu       sync.Mutex
	mode     string
	provider string
	next     http.Handler
}

func (h *switchHandler) set(mode string) error {
	switch mode {
	case modeUp, modeDown, modeRateLimited:
	default:
		return ErrUnknownMode
	}
	h.mu.Lock()
	h.mode = mode
	h.mu.Unlock()
	return nil
}

func (h *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	mode := h.mode
	h.mu.Unlock()
	switch mode {
	case modeDown:
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
	case modeRateLimited:
		w.Header().Set("Retry-After", "2")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		if h.provider == "stripe" {
			_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests hit the API too quickly."}}`))
			return
		}
		_, _ = w.Write([]byte(`{"statusCode":"429","error":"Too Many Requests","message":"rate limited"}`))
	default:
		h.next.ServeHTTP(w, r)
	}
}

func (s *standins) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *standins) list(w http.ResponseWriter, _ *http.Request) {
	type state struct {
		Provider string `json:"provider"`
		Standin  bool   `json:"standin"`
		URL      string `json:"url,omitempty"`
		Mode     string `json:"mode,omitempty"`
		Note     string `json:"note,omitempty"`
	}
	var out []state
	for _, p := range s.providers {
		p.mu.Lock()
		st := state{Provider: p.name, Standin: p.standin, Note: p.note}
		if p.standin {
			st.URL, st.Mode = "http://"+p.addr, p.mode
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *standins) switchMode(w http.ResponseWriter, r *http.Request) {
	name, mode := r.PathValue("name"), r.PathValue("mode")
	for _, p := range s.providers {
		if p.name != name {
			continue
		}
		if !p.standin {
			http.Error(w, name+" is not a local stand-in here: "+p.note, http.StatusConflict)
			return
		}
		if err := p.setMode(mode); err != nil {
			http.Error(w, ErrUnknownMode.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.mode = mode
		p.mu.Unlock()
		s.logger.Info("stand-in switched", "provider", name, "mode", mode)
		s.list(w, r)
		return
	}
	http.Error(w, fmt.Sprintf("%s %q (stripe, hubspot, zendesk, supabase)", ErrUnknownProvider, name), http.StatusNotFound)
}

func (s *standins) listProviders() []*provider { return s.providers }

// Close stops every stand-in and stripe-mock.
func (s *standins) Close() {
	for _, p := range s.providers {
		if p.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = p.srv.Shutdown(ctx)
			cancel()
		}
	}
	if s.stripe != nil && s.stripe.Process != nil {
		_ = s.stripe.Process.Kill()
		_ = s.stripe.Wait()
	}
}
