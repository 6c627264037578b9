package providerfake

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Switchable is what the control endpoint needs of a stand-in; every fake embedding a Switch
// has it.
type Switchable interface {
	Mode() Mode
	SetMode(Mode)
}

var _ Switchable = (*Switch)(nil)

// Provider is one external service as the control endpoint shows it.
type Provider struct {
	Name string
	// URL is where the stand-in listens.
	URL string
	// Switch drives the stand-in; nil when the real service (or something else already
	// listening on URL) is used, which Note then says.
	Switch Switchable
	Note   string
}

// State is one provider in the control endpoint's list.
type State struct {
	Provider string `json:"provider"`
	Standin  bool   `json:"standin"`
	URL      string `json:"url,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Note     string `json:"note,omitempty"`
}

// State reports the provider now.
func (p Provider) State() State {
	st := State{Provider: p.Name, Standin: p.Switch != nil, Note: p.Note}
	if p.Switch != nil {
		st.URL, st.Mode = p.URL, p.Switch.Mode().String()
	}
	return st
}

// Control is the control endpoint under prefix (e.g. "/_dev/providers"): GET prefix lists
// every provider with its mode, POST prefix/{name}/{mode} switches one stand-in (404 for an
// unknown provider, 400 for an unknown mode, 409 for a provider that is not a stand-in) and
// answers the new list. It needs no credentials: it is for a loopback dev server only.
func Control(prefix string, providers ...Provider) http.Handler {
	prefix = strings.TrimRight(prefix, "/")
	list := func(w http.ResponseWriter) {
		out := make([]State, 0, len(providers))
		for _, p := range providers {
			out = append(out, p.State())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix, func(w http.ResponseWriter, _ *http.Request) { list(w) })
	mux.HandleFunc("POST "+prefix+"/{name}/{mode}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var names []string
		for _, p := range providers {
			names = append(names, p.Name)
			if p.Name != name {
				continue
			}
			if p.Switch == nil {
				http.Error(w, name+" is not a local stand-in here: "+p.Note, http.StatusConflict)
				return
			}
			m, err := ParseMode(r.PathValue("mode"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			p.Switch.SetMode(m)
			list(w)
			return
		}
		http.Error(w, "unknown provider "+name+" (want one of "+strings.Join(names, ", ")+")", http.StatusNotFound)
	})
	return mux
}
