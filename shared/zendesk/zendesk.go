// Package zendesk is the small Zendesk Support API client the helpdesk worker uses to push our
// tickets to Zendesk: create one ticket (with Zendesk's Idempotency-Key) and find tickets by our
// ticket id (external_id) after an ambiguous failure.
//
// The client makes exactly one HTTP attempt per call and never retries by itself: retries with
// backoff belong to the job queue, which reads [Error.Retryable], [Error.RetryAfter] and
// [Error.Ambiguous] to decide what to do next. It never logs and never puts the API token in an
// error.
package zendesk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors callers can test with errors.Is. Failures that came from Zendesk or the network are
// returned as *Error; these sentinels name the cases a caller branches on.
var (
	// ErrMissingConfig means a Config lacks a value the client cannot work without.
	ErrMissingConfig = errors.New("zendesk: missing configuration")
	// ErrInvalidConfig means a Config value is present but unusable (for example a base URL
	// carrying credentials, which could leak into logs).
	ErrInvalidConfig = errors.New("zendesk: invalid configuration")
	// ErrIdempotencyKeyReused means Zendesk refused a create because the Idempotency-Key was
	// already used, within its two-hour window, for a request with other parameters. It is
	// permanent: the key is derived from our ticket, so the payload changed under it.
	ErrIdempotencyKeyReused = errors.New("zendesk: idempotency key reused with different parameters")
	// ErrIdempotencyKeyTooLong means the key exceeds the 255 characters Zendesk accepts.
	ErrIdempotencyKeyTooLong = errors.New("zendesk: idempotency key longer than 255 characters")
)

// Zendesk's documented ticket API paths and headers.
const (
	ticketsPath = "/api/v2/tickets"
	// HeaderIdempotencyKey carries the client's idempotency key on a create.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotencyLookup is Zendesk's answer on a keyed create: "hit" for a replay of an
	// earlier request, "miss" for a first use.
	HeaderIdempotencyLookup = "X-Idempotency-Lookup"
	// MaxIdempotencyKeyLen is the longest key Zendesk accepts.
	MaxIdempotencyKeyLen = 255

	defaultTimeout = 10 * time.Second
	maxBodyBytes   = 4 << 20
	maxListPages   = 10
	userAgent      = "portal-functions-zendesk/1"
)

// Config holds what the client needs to reach one Zendesk account. It maps to the environment
// variables ZENDESK_BASE_URL, ZENDESK_EMAIL and ZENDESK_API_TOKEN.
type Config struct {
	// BaseURL is the account's address, e.g. https://acme.zendesk.com (no path needed).
	BaseURL string
	// Email is the agent the API token belongs to.
	Email string
	// APIToken is the account's API token; it is sent only in the Authorization header.
	APIToken string
	// HTTPClient is used for every call; nil means a fresh client on http.DefaultTransport.
	HTTPClient *http.Client
	// Timeout bounds each call (connect, send, wait, read); zero means 10 s. The caller's
	// context deadline still applies when it is shorter.
	Timeout time.Duration
}

// redacted stands for the API token wherever a Config is printed.
const redacted = "[REDACTED]"

// String prints the Config with the token redacted, so logging a Config cannot leak it.
func (cfg Config) String() string {
	token := ""
	if cfg.APIToken != "" {
		token = redacted
	}
	return fmt.Sprintf("zendesk.Config{BaseURL:%q Email:%q APIToken:%s Timeout:%s}", cfg.BaseURL, cfg.Email, token, cfg.Timeout)
}

// GoString redacts the token for %#v too.
func (cfg Config) GoString() string { return cfg.String() }

// LogValue redacts the token in log/slog.
func (cfg Config) LogValue() slog.Value {
	token := ""
	if cfg.APIToken != "" {
		token = redacted
	}
	return slog.GroupValue(
		slog.String("base_url", cfg.BaseURL),
		slog.String("email", cfg.Email),
		slog.String("api_token", token),
		slog.Duration("timeout", cfg.Timeout),
	)
}

// Validate names every missing or unusable value, so a function's main can fail fast at cold
// start instead of at the first ticket. It never prints the token.
func (cfg Config) Validate() error {
	var missing []string
	if strings.TrimSpace(cfg.BaseURL) == "" {
		missing = append(missing, "BaseURL")
	}
	if strings.TrimSpace(cfg.Email) == "" {
		missing = append(missing, "Email")
	}
	if cfg.APIToken == "" {
		missing = append(missing, "APIToken")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingConfig, strings.Join(missing, ", "))
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: BaseURL must be an absolute http(s) URL", ErrInvalidConfig)
	}
	if u.User != nil {
		return fmt.Errorf("%w: BaseURL must not carry credentials", ErrInvalidConfig)
	}
	if cfg.Timeout < 0 {
		return fmt.Errorf("%w: Timeout must not be negative", ErrInvalidConfig)
	}
	return nil
}

// Client calls the Zendesk Support API for one account. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	authHeader string
	httpClient *http.Client
	timeout    time.Duration
	configErr  error
}

// New builds a client. A Config that fails Validate still yields a client, whose every call
// returns that validation error, so wiring code can stay linear; call Config.Validate first to
// fail fast.
func New(cfg Config) *Client {
	c := &Client{
		httpClient: cfg.HTTPClient,
		timeout:    cfg.Timeout,
		configErr:  cfg.Validate(),
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{}
	}
	if c.timeout == 0 {
		c.timeout = defaultTimeout
	}
	if c.configErr == nil {
		c.base, _ = url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
		c.authHeader = BasicAuth(cfg.Email, cfg.APIToken)
	}
	return c
}

// BasicAuth returns the Authorization header value Zendesk documents for API tokens:
// Basic base64("{email}/token:{api_token}"). Exported so fakes and tests build the same value.
func BasicAuth(email, apiToken string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(email+"/token:"+apiToken))
}

// Priority is a ticket priority as Zendesk names it.
type Priority string

// The priorities Zendesk accepts.
const (
	PriorityUrgent Priority = "urgent"
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// TicketType is a ticket type as Zendesk names it.
type TicketType string

// The ticket types Zendesk accepts.
const (
	TypeProblem  TicketType = "problem"
	TypeIncident TicketType = "incident"
	TypeQuestion TicketType = "question"
	TypeTask     TicketType = "task"
)

// Requester identifies the person a ticket is for. Zendesk finds the user by email or creates
// one, so the email must be the portal user's verified address.
type Requester struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email"`
}

// NewTicket is what the worker sends to create a Zendesk ticket from one of ours.
type NewTicket struct {
	// Subject is the ticket's title.
	Subject string
	// Body is the first comment (Zendesk's description); Zendesk refuses a blank one.
	Body string
	// Requester is the portal user the ticket belongs to.
	Requester Requester
	// ExternalID is our ticket id, so the Zendesk ticket can always be found again.
	ExternalID string
	// Tags are Zendesk tags (e.g. the tenant and the category).
	Tags []string
	// Priority is optional; empty leaves Zendesk's default.
	Priority Priority
	// Type is optional; empty leaves Zendesk's default.
	Type TicketType
}

// Ticket is the part of Zendesk's ticket object the worker stores or shows.
type Ticket struct {
	ID          int64      `json:"id"`
	URL         string     `json:"url"`
	ExternalID  string     `json:"external_id"`
	Status      string     `json:"status"`
	Subject     string     `json:"subject"`
	Priority    Priority   `json:"priority"`
	Type        TicketType `json:"type"`
	Tags        []string   `json:"tags"`
	RequesterID int64      `json:"requester_id"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	// Replayed is set by CreateTicket when Zendesk answered "x-idempotency-lookup: hit": the
	// ticket was created by an earlier request with the same key, not by this one.
	Replayed bool `json:"-"`
}

type wireComment struct {
	Body string `json:"body"`
}

type wireNewTicket struct {
	Subject    string      `json:"subject,omitempty"`
	Comment    wireComment `json:"comment"`
	Requester  *Requester  `json:"requester,omitempty"`
	ExternalID string      `json:"external_id,omitempty"`
	Tags       []string    `json:"tags,omitempty"`
	Priority   Priority    `json:"priority,omitempty"`
	Type       TicketType  `json:"type,omitempty"`
}

type ticketEnvelope struct {
	Ticket wireNewTicket `json:"ticket"`
}

// CreateTicket creates a ticket with POST /api/v2/tickets. With a non-empty idempotencyKey it
// sends Zendesk's Idempotency-Key header: a repeat with the same key and body inside two hours
// returns the first ticket (Ticket.Replayed true) instead of a duplicate. Failures are *Error.
func (c *Client) CreateTicket(ctx context.Context, t NewTicket, idempotencyKey string) (Ticket, error) {
	if c.configErr != nil {
		return Ticket{}, fmt.Errorf("create ticket: %w", c.configErr)
	}
	if len(idempotencyKey) > MaxIdempotencyKeyLen {
		return Ticket{}, fmt.Errorf("create ticket: %w", ErrIdempotencyKeyTooLong)
	}
	wire := wireNewTicket{
		Subject:    t.Subject,
		Comment:    wireComment{Body: t.Body},
		ExternalID: t.ExternalID,
		Tags:       t.Tags,
		Priority:   t.Priority,
		Type:       t.Type,
	}
	if t.Requester != (Requester{}) {
		r := t.Requester
		wire.Requester = &r
	}
	body, err := json.Marshal(ticketEnvelope{Ticket: wire})
	if err != nil {
		return Ticket{}, fmt.Errorf("create ticket: encode: %w", err)
	}
	header := http.Header{"Content-Type": {"application/json"}}
	if idempotencyKey != "" {
		header.Set(HeaderIdempotencyKey, idempotencyKey)
	}

	var out struct {
		Ticket Ticket `json:"ticket"`
	}
	resp, err := c.do(ctx, "create ticket", http.MethodPost, c.endpoint(ticketsPath, nil), header, body, &out)
	if err != nil {
		return Ticket{}, err
	}
	if out.Ticket.ID == 0 {
		// Zendesk answered success without the documented ticket: it may have created one.
		return Ticket{}, &Error{Op: "create ticket", StatusCode: resp.StatusCode, ambiguous: true,
			Description: "response carried no ticket id"}
	}
	out.Ticket.Replayed = strings.EqualFold(resp.Header.Get(HeaderIdempotencyLookup), "hit")
	return out.Ticket, nil
}

// FindByExternalID lists the tickets whose external_id equals externalID with
// GET /api/v2/tickets?external_id=…. Zendesk does not make external ids unique, so it returns a
// slice (usually of zero or one). The worker calls it after an ambiguous failure, before
// creating again once the idempotency window may have passed.
func (c *Client) FindByExternalID(ctx context.Context, externalID string) ([]Ticket, error) {
	const op = "find tickets by external_id"
	if c.configErr != nil {
		return nil, fmt.Errorf("%s: %w", op, c.configErr)
	}
	next := c.endpoint(ticketsPath, url.Values{"external_id": {externalID}})
	tickets := []Ticket{}
	for page := 0; next != "" && page < maxListPages; page++ {
		var out struct {
			Tickets  []Ticket `json:"tickets"`
			NextPage *string  `json:"next_page"`
		}
		if _, err := c.do(ctx, op, http.MethodGet, next, nil, nil, &out); err != nil {
			return nil, err
		}
		tickets = append(tickets, out.Tickets...)
		next = ""
		if out.NextPage != nil && *out.NextPage != "" {
			u, err := url.Parse(*out.NextPage)
			// Follow only links to the same account: the next request carries our token.
			if err != nil || u.Scheme != c.base.Scheme || u.Host != c.base.Host {
				return nil, &Error{Op: op, Description: "next_page points outside the configured account"}
			}
			next = u.String()
		}
	}
	return tickets, nil
}

func (c *Client) endpoint(path string, query url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	return u.String()
}

// do sends one request and decodes a 2xx JSON body into out; anything else becomes *Error.
func (c *Client) do(ctx context.Context, op, method, target string, header http.Header, body []byte, out any) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", op, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", c.authHeader)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, transportError(op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		// The status line arrived, so Zendesk saw the request; the body was lost.
		return nil, &Error{Op: op, StatusCode: resp.StatusCode, Err: err, ambiguous: true,
			Description: "reading the response failed"}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, responseError(op, resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// Zendesk answered 2xx but not with the documented JSON: we cannot tell what it did.
		return nil, &Error{Op: op, StatusCode: resp.StatusCode, Err: err, ambiguous: true,
			Description: "response is not the documented JSON"}
	}
	return resp, nil
}
