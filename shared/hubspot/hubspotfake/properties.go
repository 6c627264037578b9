package hubspotfake

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// Property is a property definition as HubSpot's CRM v3 properties API returns it (the fields
// this project reads and writes).
type Property struct {
	Name           string `json:"name"`
	Label          string `json:"label"`
	Type           string `json:"type"`
	FieldType      string `json:"fieldType"`
	GroupName      string `json:"groupName"`
	Description    string `json:"description"`
	HasUniqueValue bool   `json:"hasUniqueValue"`
	HubspotDefined bool   `json:"hubspotDefined"`
	Archived       bool   `json:"archived"`
	CreatedAt      string `json:"createdAt,omitempty"`
}

// PropertyGroup is a property group as the API returns it.
type PropertyGroup struct {
	Name         string `json:"name"`
	Label        string `json:"label"`
	DisplayOrder int    `json:"displayOrder"`
	Archived     bool   `json:"archived"`
}

// propertyStore holds each object type's properties and groups, starting with HubSpot's own
// ones this project relies on (no custom property exists in a new portal).
type propertyStore struct {
	mu     sync.Mutex
	props  map[string]map[string]Property      // object type -> name
	groups map[string]map[string]PropertyGroup // object type -> name
}

func newPropertyStore() *propertyStore {
	st := &propertyStore{props: map[string]map[string]Property{}, groups: map[string]map[string]PropertyGroup{}}
	builtin := map[string][]string{
		"contacts":  {"email", "company", "firstname", "lastname", "lifecyclestage"},
		"companies": {"name", "domain", "lifecyclestage"},
	}
	for objectType, names := range builtin {
		st.props[objectType] = map[string]Property{}
		group := strings.TrimSuffix(objectType, "s") + "information"
		if objectType == "companies" {
			group = "companyinformation"
		}
		st.groups[objectType] = map[string]PropertyGroup{group: {Name: group, Label: "Information"}}
		for _, n := range names {
			st.props[objectType][n] = Property{Name: n, Label: n, Type: "string", FieldType: "text", GroupName: group, HubspotDefined: true}
		}
	}
	return st
}

// Property returns a property of objectType ("contacts", "companies").
func (s *Server) Property(objectType, name string) (Property, bool) {
	s.props.mu.Lock()
	defer s.props.mu.Unlock()
	p, ok := s.props.props[objectType][name]
	return p, ok
}

// PutProperty defines a property directly (as if someone had made it in HubSpot's settings).
func (s *Server) PutProperty(objectType string, p Property) {
	s.props.mu.Lock()
	defer s.props.mu.Unlock()
	s.props.props[objectType][p.Name] = p
}

// serveProperties answers the CRM v3 properties API:
//
//   - GET  /crm/v3/properties/{objectType}/{name}         → 200 the property, 404 OBJECT_NOT_FOUND
//   - POST /crm/v3/properties/{objectType}                → 201 the property; 409 CONFLICT when it
//     exists; 400 VALIDATION_ERROR for a missing field or an unknown group
//   - GET  /crm/v3/properties/{objectType}/groups/{name}  → 200 the group, 404 OBJECT_NOT_FOUND
//   - POST /crm/v3/properties/{objectType}/groups         → 201 the group; 409 CONFLICT when it exists
func (s *Server) serveProperties(w http.ResponseWriter, r *http.Request, body []byte, mode Mode) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/crm/v3/properties/"), "/")
	objectType, ok := map[string]string{"contacts": "contacts", "0-1": "contacts", "companies": "companies", "0-2": "companies"}[strings.ToLower(parts[0])]
	if !ok {
		s.writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "Unable to infer object type from: "+parts[0])
		return
	}
	if !s.authorised(r) {
		w.Header().Set("X-HubSpot-Auth-Failure", "401 Unauthorized")
		s.writeError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
		return
	}
	if mode == ModeRateLimited {
		s.writeRateLimited(w)
		return
	}
	st := s.props
	st.mu.Lock()
	defer st.mu.Unlock()
	reply := func(status int, v any) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.writeJSONLocked(w, status, v)
	}
	fail := func(status int, category, message string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.writeErrorLocked(w, status, category, message, nil)
	}
	switch {
	case r.Method == http.MethodGet && len(parts) == 2:
		p, ok := st.props[objectType][parts[1]]
		if !ok {
			fail(http.StatusNotFound, "OBJECT_NOT_FOUND", "Unable to find property named "+parts[1]+" for object type "+objectType)
			return
		}
		reply(http.StatusOK, p)
	case r.Method == http.MethodPost && len(parts) == 1:
		var p Property
		if err := json.Unmarshal(body, &p); err != nil || p.Name == "" || p.Label == "" || p.Type == "" || p.FieldType == "" || p.GroupName == "" {
			fail(http.StatusBadRequest, "VALIDATION_ERROR", "name, label, type, fieldType and groupName are required")
			return
		}
		if _, ok := st.groups[objectType][p.GroupName]; !ok {
			fail(http.StatusBadRequest, "VALIDATION_ERROR", "property group "+p.GroupName+" does not exist")
			return
		}
		if _, ok := st.props[objectType][p.Name]; ok {
			fail(http.StatusConflict, "CONFLICT", "Property named '"+p.Name+"' already exists.")
			return
		}
		p.CreatedAt = stamp(s.clock())
		st.props[objectType][p.Name] = p
		reply(http.StatusCreated, p)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "groups":
		g, ok := st.groups[objectType][parts[2]]
		if !ok {
			fail(http.StatusNotFound, "OBJECT_NOT_FOUND", "Unable to find property group named "+parts[2])
			return
		}
		reply(http.StatusOK, g)
	case r.Method == http.MethodPost && len(parts) == 2 && parts[1] == "groups":
		var g PropertyGroup
		if err := json.Unmarshal(body, &g); err != nil || g.Name == "" || g.Label == "" {
			fail(http.StatusBadRequest, "VALIDATION_ERROR", "name and label are required")
			return
		}
		if _, ok := st.groups[objectType][g.Name]; ok {
			fail(http.StatusConflict, "CONFLICT", "A property group named '"+g.Name+"' already exists.")
			return
		}
		st.groups[objectType][g.Name] = g
		reply(http.StatusCreated, g)
	default:
		fail(http.StatusNotFound, "OBJECT_NOT_FOUND", "No route found for "+r.Method+" "+r.URL.Path)
	}
}
