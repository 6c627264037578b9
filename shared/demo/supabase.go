package demo

import (
	"net/http"

	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
)

// Supabase serves what the functions call of a Supabase project when none runs locally:
// Storage's signing API (storagefake, accepting serviceKey) and Auth's JWKS, empty because the
// local project signs tokens with the HS256 secret. `make dev` serves it on SupabaseURL's
// port; the function tests on a test port (tokens are minted for whichever issuer it is).
func Supabase(serviceKey string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/storage/v1/", storagefake.New(serviceKey))
	mux.HandleFunc("GET /auth/v1/.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[]}`))
	})
	return mux
}
