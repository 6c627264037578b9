// Package hubspotfake is a local stand-in for HubSpot's CRM v3 batch upsert endpoints and
// the v4 batch default association of contacts with companies, for tests and for the dev
// server, where the real HubSpot cannot be reached.
//
// It follows HubSpot's documented contract: bearer-token auth (401 INVALID_AUTHENTICATION),
// contacts upserted by email and companies by the unique portal_tenant_id property, HubSpot's
// batch response bodies, multi-status (207) per-record errors when every input carries an
// objectWriteTraceId and a whole-batch 400 when not, and the rate-limit headers. It can be
// switched at run time to answer as HubSpot does when it is down (503) or rate limiting
// (429), made slow, or told to refuse one email, and it records every input it receives so a
// test can assert what was sent. It keeps everything in memory and is safe for concurrent use.
package hubspotfake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/providerfake"
)

// DefaultAccessToken is the bearer token a new Server accepts (SetAccessToken changes it).
const DefaultAccessToken = "pat-na1-hubspotfake-local-token"

// Limits and identifiers the fake shares with HubSpot.
const (
	// MaxBatchSize is the most inputs one batch may carry.
	MaxBatchSize = 100
	// PortalID is the fake portal's id, as it appears in HubSpot's messages.
	PortalID = 1000001
	// CompanyIDProperty is the unique company property the fake knows (our tenant id).
	CompanyIDProperty = "portal_tenant_id"
)

// maxRequestBytes caps a request body; 100 inputs are far smaller.
const maxRequestBytes = 4 << 20

// Rate-limit numbers sent in X-HubSpot-RateLimit-* headers (a Free/Starter portal).
const (
	rateLimitMax      = 100
	rateLimitInterval = 10 * time.Second
	rateLimitDaily    = 250000
	rateLimitSecondly = 10
)

// Mode is how the fake answers every request (switched through the embedded Switch).
type Mode = providerfake.Mode

// The modes, as providerfake defines them: down answers 503 with a non-JSON body, as an
// unreachable HubSpot behind its edge does; rate-limited answers 429 with HubSpot's RATE_LIMIT
// body and rate-limit headers.
const (
	ModeUp          = providerfake.ModeUp
	ModeDown        = providerfake.ModeDown
	ModeRateLimited = providerfake.ModeRateLimited
)

// Contact is a contact as the fake stores it.
type Contact struct {
	ID         string
	Email      string
	Properties map[string]string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Company is a company as the fake stores it.
type Company struct {
	ID         string
	TenantID   string
	Properties map[string]string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// RecordedUpsert is one upsert input as received, in arrival order, whatever became of it.
type RecordedUpsert struct {
	At                 time.Time
	ObjectType         string // "contacts" or "companies"
	IDProperty         string
	ID                 string
	Properties         map[string]string
	ObjectWriteTraceID string
}

// Server is the fake HubSpot; it is an http.Handler.
type Server struct {
	// Switch holds the mode, the latency and the call count (SetMode, SetLatency, Calls).
	providerfake.Switch

	mu       sync.Mutex
	token    string
	failing  map[string]int // lower-cased email -> HTTP status to fail with
	upserts  []RecordedUpsert
	stores   map[string]*store
	nextID   int64
	props    *propertyStore
	now      func() time.Time
	url      string
	portalID int
	// beforeWrite, when set, is called with each authenticated upsert's inputs as it arrives,
	// before anything is written (see SetBeforeWrite).
	beforeWrite func(objectType string, inputs []RecordedUpsert)
	// associations: contact record id -> company record ids (default contact-to-company).
	associations map[string]map[string]bool
}

// object is one stored CRM record; key is its unique id value, normalised.
type object struct {
	id         string
	key        string
	properties map[string]string
	createdAt  time.Time
	updatedAt  time.Time
}

// store holds one object type's records and what makes its ids valid.
type store struct {
	objectTypeID string // HubSpot's type id, used in its messages: 0-1 contacts, 0-2 companies
	idProperty   string
	normalise    func(string) string
	validate     func(id string) (message string, ok bool)
	byKey        map[string]*object
}

// New returns a fake in ModeUp, with no latency, accepting DefaultAccessToken.
func New() *Server {
	return &Server{
		token:   DefaultAccessToken,
		failing: map[string]int{},
		stores: map[string]*store{
			"contacts": {
				objectTypeID: "0-1", idProperty: "email",
				normalise: func(s string) string { return strings.ToLower(strings.TrimSpace(s)) },
				validate:  validEmail,
				byKey:     map[string]*object{},
			},
			"companies": {
				objectTypeID: "0-2", idProperty: CompanyIDProperty,
				normalise: strings.TrimSpace,
				validate: func(id string) (string, bool) {
					return "Property " + CompanyIDProperty + " must not be empty", strings.TrimSpace(id) != ""
				},
				byKey: map[string]*object{},
			},
		},
		nextID:       100001,
		props:        newPropertyStore(),
		now:          time.Now,
		portalID:     PortalID,
		associations: map[string]map[string]bool{},
	}
}

// NewTest starts the fake on a local httptest server that closes when the test ends; URL
// gives its address, to use as the client's base URL.
func NewTest(t testing.TB) *Server {
	t.Helper()
	s := New()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.mu.Lock()
	s.url = ts.URL
	s.mu.Unlock()
	return s
}

// URL is the base URL of the server NewTest started; "" for a Server from New.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// AccessToken is the bearer token the fake accepts.
func (s *Server) AccessToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// SetAccessToken changes the accepted bearer token (the dev server uses HUBSPOT_ACCESS_TOKEN).
func (s *Server) SetAccessToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// FailEmail makes every upsert of this contact fail with status (e.g. 400 VALIDATION_ERROR,
// 409 CONFLICT): a per-record error in a multi-status batch, or the whole request's status
// otherwise. Status 0 lifts it.
func (s *Server) FailEmail(email string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(strings.TrimSpace(email))
	if status == 0 {
		delete(s.failing, key)
		return
	}
	s.failing[key] = status
}

// SetBeforeWrite makes every following upsert call f with its object type and inputs when it
// arrives, before it is written, outside the fake's lock: f can hold one call (to make two
// batches overlap at HubSpot, or one land after another) or give it a latency of its own.
// nil removes it.
func (s *Server) SetBeforeWrite(f func(objectType string, inputs []RecordedUpsert)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeWrite = f
}

// Upserts returns every upsert input received by an authenticated request in ModeUp, in
// order, including inputs HubSpot would refuse.
func (s *Server) Upserts() []RecordedUpsert {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RecordedUpsert, len(s.upserts))
	for i, u := range s.upserts {
		u.Properties = maps.Clone(u.Properties)
		out[i] = u
	}
	return out
}

// Contact returns the stored contact with this email (matched case-insensitively).
func (s *Server) Contact(email string) (Contact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stores["contacts"]
	o, ok := st.byKey[st.normalise(email)]
	if !ok {
		return Contact{}, false
	}
	return Contact{ID: o.id, Email: o.key, Properties: maps.Clone(o.properties), CreatedAt: o.createdAt, UpdatedAt: o.updatedAt}, true
}

// Company returns the stored company with this portal_tenant_id.
func (s *Server) Company(tenantID string) (Company, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stores["companies"]
	o, ok := st.byKey[st.normalise(tenantID)]
	if !ok {
		return Company{}, false
	}
	return Company{ID: o.id, TenantID: o.key, Properties: maps.Clone(o.properties), CreatedAt: o.createdAt, UpdatedAt: o.updatedAt}, true
}

// ServeHTTP answers HubSpot's batch upsert endpoints and the batch default association of
// contacts with companies.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read the whole body first: only then does net/http watch the connection, so the
	// latency wait ends as soon as the client hangs up.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		s.writeError(w, http.StatusRequestEntityTooLarge, "VALIDATION_ERROR", "read request body: "+err.Error())
		return
	}
	mode, ok := s.Enter(r)
	if !ok {
		return
	}
	if mode == ModeDown {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<html><head><title>503 Service Temporarily Unavailable</title></head>"+
			"<body><h1>503 Service Temporarily Unavailable</h1></body></html>\n")
		return
	}

	if strings.HasPrefix(r.URL.Path, "/crm/v3/properties/") {
		s.serveProperties(w, r, body, mode)
		return
	}
	objectType, ok := upsertPath(r.URL.Path)
	if r.URL.Path == AssociationPath {
		objectType, ok = "associations", true
	}
	if !ok {
		s.writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "No route found for "+r.Method+" "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.writeError(w, http.StatusMethodNotAllowed, "VALIDATION_ERROR", "HTTP method "+r.Method+" is not supported by this route")
		return
	}
	if !s.authorised(r) {
		w.Header().Set("X-HubSpot-Auth-Failure", "401 Unauthorized")
		s.writeError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION",
			"Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
		return
	}
	if mode == ModeRateLimited {
		s.writeRateLimited(w)
		return
	}
	if objectType == "associations" {
		s.serveAssociate(w, body)
		return
	}
	s.serveUpsert(w, body, objectType)
}

// upsertPath reads /crm/v3/objects/{objectType}/batch/upsert for the object types the fake
// stores; HubSpot also accepts the type ids 0-1 and 0-2.
func upsertPath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/crm/v3/objects/")
	if !ok {
		return "", false
	}
	objectType, ok := strings.CutSuffix(rest, "/batch/upsert")
	if !ok {
		return "", false
	}
	switch strings.ToLower(objectType) {
	case "contacts", "contact", "0-1":
		return "contacts", true
	case "companies", "company", "0-2":
		return "companies", true
	default:
		return "", false
	}
}

func (s *Server) authorised(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	return ok && token != "" && token == s.token
}

type upsertInput struct {
	ID                 string            `json:"id"`
	IDProperty         string            `json:"idProperty"`
	Properties         map[string]string `json:"properties"`
	ObjectWriteTraceID string            `json:"objectWriteTraceId"`
}

// Result is one record of HubSpot's batch upsert answer.
type Result struct {
	ID                 string            `json:"id"`
	Properties         map[string]string `json:"properties"`
	CreatedAt          string            `json:"createdAt"`
	UpdatedAt          string            `json:"updatedAt"`
	Archived           bool              `json:"archived"`
	New                bool              `json:"new"`
	ObjectWriteTraceID string            `json:"objectWriteTraceId,omitempty"`
}

// BatchError is one per-record error of a multi-status answer.
type BatchError struct {
	Status   string              `json:"status"`
	Category string              `json:"category"`
	Message  string              `json:"message"`
	Context  map[string][]string `json:"context,omitempty"`
	Errors   []ErrorDetail       `json:"errors,omitempty"`
}

// ErrorDetail is one entry of an error's errors[] array.
type ErrorDetail struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
	In      string `json:"in,omitempty"`
}

// BatchResponse is HubSpot's batch upsert answer (200, or 207 with errors).
type BatchResponse struct {
	Status      string         `json:"status"`
	Results     []Result       `json:"results"`
	NumErrors   int            `json:"numErrors,omitempty"`
	Errors      []BatchError   `json:"errors,omitempty"`
	RequestedAt string         `json:"requestedAt,omitempty"`
	StartedAt   string         `json:"startedAt"`
	CompletedAt string         `json:"completedAt"`
	Links       map[string]any `json:"links"`
}

// ErrorResponse is HubSpot's error body for a failed request.
type ErrorResponse struct {
	Status        string        `json:"status"`
	Message       string        `json:"message"`
	CorrelationID string        `json:"correlationId"`
	Category      string        `json:"category,omitempty"`
	Errors        []ErrorDetail `json:"errors,omitempty"`
	Context       any           `json:"context,omitempty"`
}

// RateLimitResponse is HubSpot's 429 body.
type RateLimitResponse struct {
	Status        string `json:"status"`
	Message       string `json:"message"`
	ErrorType     string `json:"errorType"`
	CorrelationID string `json:"correlationId"`
	PolicyName    string `json:"policyName"`
	RequestID     string `json:"requestId"`
}

// recordFailure is why one input is refused.
type recordFailure struct {
	status   int
	category string
	message  string
	details  []ErrorDetail
}

func (s *Server) serveUpsert(w http.ResponseWriter, body []byte, objectType string) {
	startedAt := s.clock()
	var req struct {
		Inputs []upsertInput `json:"inputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		s.writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error())
		return
	}
	recorded := make([]RecordedUpsert, 0, len(req.Inputs))
	for _, in := range req.Inputs {
		recorded = append(recorded, RecordedUpsert{
			At: startedAt, ObjectType: objectType, IDProperty: in.IDProperty, ID: in.ID,
			Properties: maps.Clone(in.Properties), ObjectWriteTraceID: in.ObjectWriteTraceID,
		})
	}
	s.mu.Lock()
	hook := s.beforeWrite
	s.mu.Unlock()
	if hook != nil {
		hook(objectType, slices.Clone(recorded))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stores[objectType]
	s.upserts = append(s.upserts, recorded...)

	if len(req.Inputs) == 0 {
		s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR", "inputs must contain at least one input", nil)
		return
	}
	if len(req.Inputs) > MaxBatchSize {
		s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR",
			fmt.Sprintf("Batch input size %d exceeds the limit of %d inputs", len(req.Inputs), MaxBatchSize), nil)
		return
	}
	multiStatus := true
	seen := map[string]bool{}
	var dups []string
	for _, in := range req.Inputs {
		if in.IDProperty != st.idProperty {
			s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR",
				fmt.Sprintf("Unable to perform update/upsert by non-unique %s property %s in portal ID %d", st.objectTypeID, in.IDProperty, s.portalID), nil)
			return
		}
		if in.ObjectWriteTraceID == "" {
			multiStatus = false
		}
		key := st.normalise(in.ID)
		if seen[key] && key != "" {
			dups = append(dups, in.ID)
		}
		seen[key] = true
	}
	if len(dups) > 0 {
		s.writeErrorLocked(w, http.StatusBadRequest, "VALIDATION_ERROR",
			"Duplicate IDs found in batch input: ["+strings.Join(dups, ", ")+"]", nil)
		return
	}

	failures := make([]*recordFailure, len(req.Inputs))
	var firstFailure *recordFailure
	for i, in := range req.Inputs {
		failures[i] = s.checkLocked(st, objectType, in)
		if failures[i] != nil && firstFailure == nil {
			firstFailure = failures[i]
		}
	}
	if firstFailure != nil && !multiStatus {
		// Without an objectWriteTraceId on every input HubSpot cannot answer per record, so
		// one refused input fails the whole batch and nothing is written.
		s.writeErrorLocked(w, firstFailure.status, firstFailure.category, firstFailure.message, firstFailure.details)
		return
	}

	resp := BatchResponse{Status: "COMPLETE", Results: []Result{}, StartedAt: stamp(startedAt), Links: map[string]any{}}
	for i, in := range req.Inputs {
		if f := failures[i]; f != nil {
			resp.Errors = append(resp.Errors, BatchError{
				Status: "error", Category: f.category, Message: f.message, Errors: f.details,
				Context: map[string][]string{"objectWriteTraceId": {in.ObjectWriteTraceID}},
			})
			continue
		}
		o, created := s.writeLocked(st, in)
		resp.Results = append(resp.Results, Result{
			ID: o.id, Properties: s.resultProperties(st, o), CreatedAt: stamp(o.createdAt), UpdatedAt: stamp(o.updatedAt),
			New: created, ObjectWriteTraceID: in.ObjectWriteTraceID,
		})
	}
	resp.NumErrors = len(resp.Errors)
	resp.CompletedAt = stamp(s.clockLocked())
	status := http.StatusOK
	if resp.NumErrors > 0 {
		status = http.StatusMultiStatus
	}
	s.writeJSONLocked(w, status, resp)
}

// checkLocked decides whether HubSpot would refuse this input.
func (s *Server) checkLocked(st *store, objectType string, in upsertInput) *recordFailure {
	if msg, ok := st.validate(in.ID); !ok {
		code := "INVALID_EMAIL"
		if objectType != "contacts" {
			code = "INVALID_PROPERTY_VALUE"
		}
		return &recordFailure{
			status: http.StatusBadRequest, category: "VALIDATION_ERROR",
			message: fmt.Sprintf(`Property values were not valid: [{"isValid":false,"message":%q,"error":%q,"name":%q}]`, msg, code, st.idProperty),
			details: []ErrorDetail{{Message: msg, Code: code, In: st.idProperty}},
		}
	}
	if objectType == "contacts" {
		if status, ok := s.failing[st.normalise(in.ID)]; ok {
			return &recordFailure{
				status: status, category: categoryFor(status),
				message: fmt.Sprintf("Contact %s was refused by hubspotfake (FailEmail, status %d)", in.ID, status),
			}
		}
	}
	return nil
}

// writeLocked creates or updates the record; "" clears a property, as in HubSpot.
func (s *Server) writeLocked(st *store, in upsertInput) (*object, bool) {
	now := s.clockLocked()
	key := st.normalise(in.ID)
	o, exists := st.byKey[key]
	if !exists {
		o = &object{id: strconv.FormatInt(s.nextID, 10), key: key, properties: map[string]string{}, createdAt: now}
		s.nextID++
		st.byKey[key] = o
	}
	for name, value := range in.Properties {
		if value == "" {
			delete(o.properties, name)
			continue
		}
		o.properties[name] = value
	}
	o.properties[st.idProperty] = key
	o.updatedAt = now
	return o, !exists
}

// resultProperties is what HubSpot returns with a written record: its properties plus the
// read-only id and timestamps.
func (s *Server) resultProperties(st *store, o *object) map[string]string {
	p := maps.Clone(o.properties)
	p["hs_object_id"] = o.id
	p["createdate"] = stamp(o.createdAt)
	if st.objectTypeID == "0-1" {
		p["lastmodifieddate"] = stamp(o.updatedAt)
	} else {
		p["hs_lastmodifieddate"] = stamp(o.updatedAt)
	}
	return p
}

func (s *Server) writeRateLimited(w http.ResponseWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setRateLimitHeadersLocked(w.Header(), 0)
	s.writeJSONLocked(w, http.StatusTooManyRequests, RateLimitResponse{
		Status:        "error",
		Message:       "You have reached your ten_secondly_rolling limit.",
		ErrorType:     "RATE_LIMIT",
		CorrelationID: uuid.NewString(),
		PolicyName:    "TEN_SECONDLY_ROLLING",
		RequestID:     uuid.NewString(),
	})
}

func (s *Server) writeError(w http.ResponseWriter, status int, category, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeErrorLocked(w, status, category, message, nil)
}

func (s *Server) writeErrorLocked(w http.ResponseWriter, status int, category, message string, details []ErrorDetail) {
	s.writeJSONLocked(w, status, ErrorResponse{
		Status: "error", Message: message, CorrelationID: uuid.NewString(), Category: category, Errors: details,
	})
}

// writeJSONLocked sends a JSON answer with the correlation and rate-limit headers HubSpot
// puts on every response.
func (s *Server) writeJSONLocked(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=utf-8")
	if h.Get("X-HubSpot-RateLimit-Max") == "" {
		s.setRateLimitHeadersLocked(h, rateLimitMax-1)
	}
	h.Set("X-HubSpot-Correlation-Id", uuid.NewString())
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func (s *Server) setRateLimitHeadersLocked(h http.Header, remaining int) {
	h.Set("X-HubSpot-RateLimit-Max", strconv.Itoa(rateLimitMax))
	h.Set("X-HubSpot-RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", strconv.FormatInt(rateLimitInterval.Milliseconds(), 10))
	h.Set("X-HubSpot-RateLimit-Daily", strconv.Itoa(rateLimitDaily))
	h.Set("X-HubSpot-RateLimit-Daily-Remaining", strconv.Itoa(max(rateLimitDaily-s.Calls(), 0)))
	h.Set("X-HubSpot-RateLimit-Secondly", strconv.Itoa(rateLimitSecondly))
	h.Set("X-HubSpot-RateLimit-Secondly-Remaining", strconv.Itoa(min(remaining, rateLimitSecondly-1)))
}

func (s *Server) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clockLocked()
}

func (s *Server) clockLocked() time.Time { return s.now().UTC() }

// stamp formats a time as HubSpot does: ISO 8601 in UTC with milliseconds.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// categoryFor is HubSpot's category for an HTTP status.
func categoryFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "INVALID_AUTHENTICATION"
	case http.StatusForbidden:
		return "MISSING_SCOPES"
	case http.StatusNotFound:
		return "OBJECT_NOT_FOUND"
	case http.StatusConflict:
		return "CONFLICT"
	case http.StatusTooManyRequests:
		return "RATE_LIMITS"
	}
	if status >= 500 {
		return "INTERNAL_ERROR"
	}
	return "VALIDATION_ERROR"
}

// validEmail applies HubSpot's documented format rules: an RFC 5322 address without display
// name or quoted local part, whose domain ends in an alphabetic top-level domain.
func validEmail(email string) (string, bool) {
	bad := "Email address " + email + " is invalid"
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Name != "" || addr.Address != strings.TrimSpace(email) {
		return bad, false
	}
	local, domain, ok := strings.Cut(addr.Address, "@")
	if !ok || local == "" || strings.Contains(local, `"`) {
		return bad, false
	}
	labels := strings.Split(domain, ".")
	tld := labels[len(labels)-1]
	if len(labels) < 2 || slices.Contains(labels, "") || len(tld) < 2 {
		return bad, false
	}
	for _, r := range tld {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return bad, false
		}
	}
	return "", true
}

// Compile-time check that the fake is an http.Handler.
var _ http.Handler = (*Server)(nil)
