package demo

import (
	"net/http"

	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
)

// Supabase serves what the functions call of a Supabase project when none runs locally:
// Storage's signing API (the embedded storagefake.Server, accepting the service key; its
// switch is what `make dev` turns down or up) and Auth's JWKS, empty because the local project signs tokens with the
// HS256 secret. `make dev` serves it on SupabaseURL's port; the function tests on a test port
// (tokens are minted for whichever issuer it is).
type Supabase struct {
	*storagefake.Server
	mux *http.ServeMux
}

var _ http.Handler = (*Supabase)(nil)

// NewSupabase returns the stand-in, accepting serviceKey as Storage's service role key.
func NewSupabase(serviceKey string) *Supabase {
	s := &Supabase{Server: storagefake.New(serviceKey), mux: http.NewServeMux()}
	s.mux.Handle("/storage/v1/", s.Server)
	s.mux.HandleFunc("GET /auth/v1/.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[]}`))
	})
	return s
}

// ServeHTTP answers Storage and JWKS requests, with the CORS headers Supabase's API gateway
// sends (any origin), so a portal page on another origin can PUT a file to a signed upload URL
// as supabase-js does in a browser. A preflight is answered here and never reaches Storage.
func (s *Supabase) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Type")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, PUT, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "authorization, x-client-info, apikey, content-type, x-upsert, cache-control")
		h.Set("Access-Control-Max-Age", "3600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mux.ServeHTTP(w, r)
}
