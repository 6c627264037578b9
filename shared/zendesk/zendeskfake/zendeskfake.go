// Package zendeskfake is a local stand-in for the Zendesk Support ticket API, following its
// documented contract: API-token basic auth, ticket create with Idempotency-Key (two-hour
// memory, "x-idempotency-lookup: hit|miss", IdempotentRequestError on a reused key),
// RecordInvalid validation errors, listing by external_id, and showing one ticket.
//
// Tests of other packages and the dev server (`make dev`) use it instead of the real service,
// which cannot be reached from here. It can be switched at run time, from any goroutine, to
// behave like an outage (503), a rate limit (429 + Retry-After), a slow network, or a create that
// succeeds on the server while the client never hears back (the ambiguous failure a worker must
// survive without duplicating tickets).
package zendeskfake

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portal-functions/portal-functions/shared/providerfake"
)

// Local credentials for the dev server, which runs the fake when ZENDESK_* are not set. They
// unlock nothing but the fake.
const (
	DefaultEmail    = "agent@zendeskfake.local"
	DefaultAPIToken = "zendeskfake-local-token"
)

// IdempotencyWindow is how long Zendesk remembers an Idempotency-Key.
const IdempotencyWindow = 2 * time.Hour

const (
	agentUserID        = 1
	firstRequesterID   = 1000
	maxRequestBytes    = 1 << 20
	defaultRetryAfter  = 2 * time.Second
	maxWithheldRespond = 2 * time.Minute
	timeLayout         = "2006-01-02T15:04:05Z"
)

// Mode is the fake's overall health, switched through the embedded Switch.
type Mode = providerfake.Mode

// The modes, as providerfake defines them: up serves normally; down answers 503 to every
// request; rate-limited answers 429 with Retry-After to every authenticated request.
const (
	ModeUp          = providerfake.ModeUp
	ModeDown        = providerfake.ModeDown
	ModeRateLimited = providerfake.ModeRateLimited
)

// Ticket is a ticket as the fake stored it, for assertions in tests and for the dev server.
type Ticket struct {
	ID             int64
	ExternalID     string
	Subject        string
	Description    string // the first comment's body
	Status         string
	Priority       string
	Type           string
	Tags           []string
	RequesterID    int64
	RequesterName  string
	RequesterEmail string
	IdempotencyKey string
	CreatedAt      time.Time
	// ReceivedAt is when the fake stored the ticket, to the nanosecond (CreatedAt, as the API
	// shows it, has whole seconds only): what a benchmark times a push by.
	ReceivedAt time.Time
}

type idempotencyRecord struct {
	requestHash [32]byte
	response    []byte
	location    string
	storedAt    time.Time
}

// Server is the fake Zendesk account: an http.Handler safe for concurrent use.
type Server struct {
	// Switch holds the mode, the latency and the call count (SetMode, SetLatency, Calls), and
	// Close releases the requests it or a withheld answer holds back.
	providerfake.Switch

	email, token string

	mu           sync.Mutex
	retryAfter   time.Duration
	withholdNext int
	clockOffset  time.Duration
	nextID       int64
	tickets      []Ticket
	users        map[string]int64 // lower-cased email -> user id
	keys         map[string]idempotencyRecord

	mux *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// New returns a fake account that accepts the API token of the agent email.
func New(email, token string) *Server {
	s := &Server{
		email:      email,
		token:      token,
		retryAfter: defaultRetryAfter,
		nextID:     1,
		users:      map[string]int64{},
		keys:       map[string]idempotencyRecord{},
		mux:        http.NewServeMux(),
	}
	for _, p := range []string{"/api/v2/tickets", "/api/v2/tickets.json"} {
		s.mux.HandleFunc("POST "+p, s.createTicket)
		s.mux.HandleFunc("GET "+p, s.listTickets)
	}
	s.mux.HandleFunc("GET /api/v2/tickets/{id}", s.showTicket)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "InvalidEndpoint", "description": "Not found"})
	})
	return s
}

// SetRetryAfter sets the Retry-After a rate-limited answer carries (whole seconds, at least 1).
func (s *Server) SetRetryAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retryAfter = d
}

// TimeoutNextCreates makes the next n successful creates commit the ticket (and its idempotency
// record) but withhold the answer until the client gives up, as a timeout after sending does.
// The client sees a timeout; the ticket exists; a keyed retry replays it.
func (s *Server) TimeoutNextCreates(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.withholdNext = n
}

// Advance moves the fake's clock forward, e.g. past IdempotencyWindow so keys are forgotten.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clockOffset += d
}

// Tickets returns copies of every created ticket, oldest first.
func (s *Server) Tickets() []Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Ticket, len(s.tickets))
	for i, t := range s.tickets {
		out[i] = cloneTicket(t)
	}
	return out
}

// Ticket returns the oldest ticket with that external_id.
func (s *Server) Ticket(externalID string) (Ticket, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tickets {
		if t.ExternalID == externalID {
			return cloneTicket(t), true
		}
	}
	return Ticket{}, false
}

// ServeHTTP answers like Zendesk: outage and latency first, then authentication, then the rate
// limit, then the ticket endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, ok := s.Enter(r)
	if !ok {
		return
	}
	s.mu.Lock()
	retryAfter := s.retryAfter
	s.mu.Unlock()

	if mode == ModeDown {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "Service Unavailable: Zendesk is temporarily unavailable.\n")
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Web Password"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Couldn't authenticate you"})
		return
	}
	if mode == ModeRateLimited {
		secs := int((retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "Too Many Requests\n")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authorized checks "{email}/token:{token}" basic auth, the API-token form Zendesk documents.
func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	wantUser := s.email + "/token"
	return subtle.ConstantTimeCompare([]byte(user), []byte(wantUser)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.token)) == 1
}

func (s *Server) now() time.Time {
	return time.Now().Add(s.clockOffset).UTC().Truncate(time.Second)
}

type createRequest struct {
	Ticket *struct {
		Subject string `json:"subject"`
		Comment struct {
			Body     string `json:"body"`
			HTMLBody string `json:"html_body"`
		} `json:"comment"`
		Requester *struct {
			Name  string `json:"name"`
			Email string `json:"email"`
		} `json:"requester"`
		ExternalID *string  `json:"external_id"`
		Tags       []string `json:"tags"`
		Priority   *string  `json:"priority"`
		Type       *string  `json:"type"`
	} `json:"ticket"`
}

func (s *Server) createTicket(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "RequestTooLarge", "description": "Request body too large"})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	hash := requestHash(raw)

	s.mu.Lock()
	now := s.now()
	if key != "" {
		if rec, ok := s.keys[key]; ok && now.Sub(rec.storedAt) < IdempotencyWindow {
			s.mu.Unlock()
			if rec.requestHash != hash {
				writeJSON(w, http.StatusBadRequest, map[string]string{
					"error":       "IdempotentRequestError",
					"description": "Request parameters don't match the given idempotency key",
				})
				return
			}
			w.Header().Set("Location", rec.location)
			w.Header().Set("X-Idempotency-Lookup", "hit")
			writeRaw(w, http.StatusCreated, rec.response)
			return
		}
		delete(s.keys, key)
	}

	var req createRequest
	if err := json.Unmarshal(raw, &req); err != nil || req.Ticket == nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"error":       "ParameterMissing",
			"description": "param is missing or the value is empty: ticket",
		})
		return
	}
	in := req.Ticket
	details := map[string][]map[string]string{}
	if strings.TrimSpace(in.Comment.Body) == "" && strings.TrimSpace(in.Comment.HTMLBody) == "" {
		details["description"] = []map[string]string{{"description": "Description: cannot be blank", "error": "BlankValue"}}
	}
	if in.Requester != nil && !validEmail(in.Requester.Email) {
		details["requester"] = []map[string]string{{"description": "Requester: Email is invalid", "error": "InvalidValue"}}
	}
	if len(details) > 0 {
		s.mu.Unlock()
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"error":       "RecordInvalid",
			"description": "Record validation errors",
			"details":     details,
		})
		return
	}

	t := Ticket{
		ID:             s.nextID,
		Subject:        in.Subject,
		Description:    in.Comment.Body,
		Status:         "new",
		Tags:           append([]string{}, in.Tags...),
		RequesterID:    agentUserID,
		IdempotencyKey: key,
		CreatedAt:      now,
		ReceivedAt:     time.Now(),
	}
	if t.Description == "" {
		t.Description = in.Comment.HTMLBody
	}
	if in.ExternalID != nil {
		t.ExternalID = *in.ExternalID
	}
	if in.Priority != nil {
		t.Priority = *in.Priority
	}
	if in.Type != nil {
		t.Type = *in.Type
	}
	if in.Requester != nil {
		t.RequesterName, t.RequesterEmail = in.Requester.Name, in.Requester.Email
		t.RequesterID = s.userID(in.Requester.Email)
	}
	s.nextID++
	s.tickets = append(s.tickets, t)

	base := baseURL(r)
	location := ticketURL(base, t.ID)
	body, _ := json.Marshal(map[string]any{"ticket": ticketJSON(base, t)})
	if key != "" {
		s.keys[key] = idempotencyRecord{requestHash: hash, response: body, location: location, storedAt: now}
	}
	withhold := s.withholdNext > 0
	if withhold {
		s.withholdNext--
	}
	s.mu.Unlock()

	if withhold {
		s.withhold(w, r)
		return
	}
	w.Header().Set("Location", location)
	if key != "" {
		w.Header().Set("X-Idempotency-Lookup", "miss")
	}
	writeRaw(w, http.StatusCreated, body)
}

// withhold keeps the answer back until the client gives up, then drops the connection so no
// response ever reaches it.
func (s *Server) withhold(w http.ResponseWriter, r *http.Request) {
	timer := time.NewTimer(maxWithheldRespond)
	defer timer.Stop()
	select {
	case <-r.Context().Done():
	case <-s.Done():
	case <-timer.C:
	}
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
		return
	}
	panic(http.ErrAbortHandler) // HTTP/2: abort the stream without a response
}

func (s *Server) userID(email string) int64 {
	k := strings.ToLower(email)
	if id, ok := s.users[k]; ok {
		return id
	}
	id := int64(firstRequesterID + len(s.users))
	s.users[k] = id
	return id
}

func (s *Server) listTickets(w http.ResponseWriter, r *http.Request) {
	externalID, filter := r.URL.Query()["external_id"]
	base := baseURL(r)
	s.mu.Lock()
	list := []any{}
	for _, t := range s.tickets {
		if !filter || (len(externalID) > 0 && t.ExternalID == externalID[0]) {
			list = append(list, ticketJSON(base, t))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"tickets":       list,
		"next_page":     nil,
		"previous_page": nil,
		"count":         len(list),
	})
}

func (s *Server) showTicket(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(strings.TrimSuffix(r.PathValue("id"), ".json"), 10, 64)
	if err == nil {
		s.mu.Lock()
		for _, t := range s.tickets {
			if t.ID == id {
				s.mu.Unlock()
				writeJSON(w, http.StatusOK, map[string]any{"ticket": ticketJSON(baseURL(r), t)})
				return
			}
		}
		s.mu.Unlock()
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "RecordNotFound", "description": "Not found"})
}

// ticketJSON renders a ticket the way Zendesk's API does (empty optional values are null).
func ticketJSON(base string, t Ticket) map[string]any {
	created := t.CreatedAt.Format(timeLayout)
	return map[string]any{
		"url":               ticketURL(base, t.ID),
		"id":                t.ID,
		"external_id":       nullable(t.ExternalID),
		"via":               map[string]any{"channel": "api", "source": map[string]any{"from": map[string]any{}, "to": map[string]any{}, "rel": nil}},
		"created_at":        created,
		"updated_at":        created,
		"type":              nullable(t.Type),
		"subject":           t.Subject,
		"raw_subject":       t.Subject,
		"description":       t.Description,
		"priority":          nullable(t.Priority),
		"status":            t.Status,
		"recipient":         nil,
		"requester_id":      t.RequesterID,
		"submitter_id":      agentUserID,
		"assignee_id":       nil,
		"organization_id":   nil,
		"group_id":          nil,
		"collaborator_ids":  []int64{},
		"follower_ids":      []int64{},
		"email_cc_ids":      []int64{},
		"problem_id":        nil,
		"has_incidents":     false,
		"is_public":         true,
		"due_at":            nil,
		"tags":              append([]string{}, t.Tags...),
		"custom_fields":     []any{},
		"fields":            []any{},
		"followup_ids":      []int64{},
		"allow_attachments": true,
	}
}

func ticketURL(base string, id int64) string {
	return base + "/api/v2/tickets/" + strconv.FormatInt(id, 10) + ".json"
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && strings.Contains(s[strings.LastIndex(s, "@")+1:], ".")
}

// requestHash compares requests by their JSON content, not their bytes: key order and spacing
// do not make a retry "different".
func requestHash(raw []byte) [32]byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) == nil {
		if canon, err := json.Marshal(v); err == nil {
			return sha256.Sum256(canon)
		}
	}
	return sha256.Sum256(raw)
}

func cloneTicket(t Ticket) Ticket {
	t.Tags = append([]string{}, t.Tags...)
	return t
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// TestServer is a fake served on a local httptest server for the length of one test.
type TestServer struct {
	*Server
	srv *httptest.Server
}

// NewTest starts a fake for email and token on a local port and stops it when the test ends.
func NewTest(t testing.TB, email, token string) *TestServer {
	t.Helper()
	fake := New(email, token)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		fake.Close()
		srv.Close()
	})
	return &TestServer{Server: fake, srv: srv}
}

// URL is the fake account's base URL, to use as zendesk.Config.BaseURL.
func (ts *TestServer) URL() string { return ts.srv.URL }

// Client is an http.Client for the fake's server.
func (ts *TestServer) Client() *http.Client { return ts.srv.Client() }
