// Package hubspot is a small HubSpot CRM client for the one thing this project needs from
// HubSpot: pushing contacts (by email) and companies (by our tenant id) with batch upserts (v3),
// and associating each contact with its companies (v4 batch default association).
//
// It speaks plain net/http with a private-app access token, because the official SDKs bring
// far more surface than two endpoints need. Every batch asks for HubSpot's multi-status
// answer (one objectWriteTraceId per input), so one bad record fails alone: BatchResult says,
// input by input, which record HubSpot created or updated and which it refused and why.
// Every failure is an *Error whose Retryable method tells a job queue what to do next.
package hubspot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Defaults used when Config leaves a field empty.
const (
	// DefaultBaseURL is HubSpot's API host.
	DefaultBaseURL = "https://api.hubapi.com"
	// DefaultTimeout bounds one request, so a slow HubSpot cannot hold a Lambda until it dies.
	DefaultTimeout = 10 * time.Second
	// MaxBatchSize is the most inputs HubSpot accepts in one batch upsert.
	MaxBatchSize = 100
	// ContactIDProperty is the unique contact property upserts are keyed by.
	ContactIDProperty = "email"
	// CompanyIDProperty is the unique custom company property (hasUniqueValue: true) that holds
	// our tenant id; it must exist in the portal before companies can be upserted.
	CompanyIDProperty = "portal_tenant_id"
)

// maxResponseBytes caps how much of a response is read; a full batch answer is far smaller.
const maxResponseBytes = 8 << 20

// Config holds what the client needs; only AccessToken is required.
type Config struct {
	// BaseURL is HubSpot's API root (HUBSPOT_BASE_URL); a local stand-in in dev and tests.
	BaseURL string
	// AccessToken is the private app's token (HUBSPOT_ACCESS_TOKEN), sent as a bearer token.
	AccessToken string
	// HTTPClient sends the requests; a fresh http.Client when nil.
	HTTPClient *http.Client
	// Timeout bounds each request; DefaultTimeout when zero.
	Timeout time.Duration
}

// String prints the config with the token hidden, so a logged or printed Config (%v, %+v)
// cannot leak it.
func (c Config) String() string {
	return fmt.Sprintf("hubspot.Config{BaseURL:%q AccessToken:%s Timeout:%s}", c.BaseURL, redacted(c.AccessToken), c.Timeout)
}

// GoString hides the token from %#v as well.
func (c Config) GoString() string { return c.String() }

// LogValue hides the token when the config is logged with log/slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("access_token", redacted(c.AccessToken)),
		slog.Duration("timeout", c.Timeout),
	)
}

func redacted(token string) string {
	if token == "" {
		return "unset"
	}
	return "[redacted]"
}

// Client calls HubSpot's CRM v3 API. It is safe for concurrent use.
type Client struct {
	baseURL string
	token   string
	http    *http.Client
	timeout time.Duration
	now     func() time.Time
}

// New builds a client from cfg, filling in defaults. A missing token is reported by each call
// (ErrNoAccessToken) rather than here, so wiring code stays one line.
func New(cfg Config) *Client {
	c := &Client{
		baseURL: strings.TrimRight(cfg.BaseURL, "/"),
		token:   cfg.AccessToken,
		http:    cfg.HTTPClient,
		timeout: cfg.Timeout,
		now:     time.Now,
	}
	if c.baseURL == "" {
		c.baseURL = DefaultBaseURL
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c
}

// String describes the client without its token, for %v and %#v.
func (c *Client) String() string {
	return fmt.Sprintf("hubspot.Client{BaseURL:%q AccessToken:%s Timeout:%s}", c.baseURL, redacted(c.token), c.timeout)
}

// GoString hides the token from %#v as well.
func (c *Client) GoString() string { return c.String() }

// ContactInput is one contact to create or update, found by email.
type ContactInput struct {
	// Email identifies the contact (HubSpot matches it case-insensitively).
	Email string
	// Properties are HubSpot internal property names and values; "" clears a value.
	Properties map[string]string
}

// CompanyInput is one company to create or update, found by its portal_tenant_id property.
type CompanyInput struct {
	// TenantID is our tenant's id, stored in HubSpot's unique portal_tenant_id property.
	TenantID string
	// Properties are HubSpot internal property names and values; "" clears a value.
	Properties map[string]string
}

// BatchResult tells, input by input, what HubSpot did with a batch.
type BatchResult struct {
	// Records has one entry per input, in input order.
	Records []RecordResult
	// RateLimit is what the response's rate-limit headers said, to slow down before a 429.
	RateLimit RateLimit
}

// RecordResult is HubSpot's answer for one input.
type RecordResult struct {
	// ID is the input's id value as sent (the email or the tenant id).
	ID string
	// ObjectID is HubSpot's record id (hs_object_id) when the upsert succeeded.
	ObjectID string
	// New is true when HubSpot created the record rather than updating it.
	New bool
	// Err is nil when the record was written; otherwise an *Error with HubSpot's category and
	// message for this record alone.
	Err error
}

// OK says whether HubSpot wrote this record.
func (r RecordResult) OK() bool { return r.Err == nil }

// Failed returns the records HubSpot refused, so a caller can mark just those as failed.
func (b BatchResult) Failed() []RecordResult {
	var out []RecordResult
	for _, r := range b.Records {
		if r.Err != nil {
			out = append(out, r)
		}
	}
	return out
}

// UpsertContacts creates or updates up to MaxBatchSize contacts by email in one call
// (POST /crm/v3/objects/contacts/batch/upsert). The error is non-nil only when the whole
// request failed; per-record refusals are in the result.
func (c *Client) UpsertContacts(ctx context.Context, inputs []ContactInput) (BatchResult, error) {
	ids := make([]string, len(inputs))
	props := make([]map[string]string, len(inputs))
	for i, in := range inputs {
		ids[i], props[i] = in.Email, in.Properties
	}
	return c.upsert(ctx, "upsert contacts", "contacts", ContactIDProperty, ids, props)
}

// UpsertCompanies creates or updates up to MaxBatchSize companies by portal_tenant_id in one
// call (POST /crm/v3/objects/companies/batch/upsert with idProperty portal_tenant_id). The
// property must exist in the portal with unique values; HubSpot refuses the batch otherwise.
func (c *Client) UpsertCompanies(ctx context.Context, inputs []CompanyInput) (BatchResult, error) {
	ids := make([]string, len(inputs))
	props := make([]map[string]string, len(inputs))
	for i, in := range inputs {
		ids[i], props[i] = in.TenantID, in.Properties
	}
	return c.upsert(ctx, "upsert companies", "companies", CompanyIDProperty, ids, props)
}

type upsertInput struct {
	IDProperty         string            `json:"idProperty"`
	ID                 string            `json:"id"`
	Properties         map[string]string `json:"properties"`
	ObjectWriteTraceID string            `json:"objectWriteTraceId"`
}

type upsertRequest struct {
	Inputs []upsertInput `json:"inputs"`
}

type batchResponse struct {
	Status  string         `json:"status"`
	Results []upsertResult `json:"results"`
	Errors  []batchError   `json:"errors"`
}

type upsertResult struct {
	ID                 string            `json:"id"`
	New                bool              `json:"new"`
	ObjectWriteTraceID string            `json:"objectWriteTraceId"`
	Properties         map[string]string `json:"properties"`
}

type batchError struct {
	errorBody
	Context map[string]json.RawMessage `json:"context"`
}

// contextValues reads one key of an error's context, which HubSpot documents as a list of
// strings but which tolerates a single string.
func (e batchError) contextValues(key string) []string {
	raw, ok := e.Context[key]
	if !ok {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	return nil
}

func (c *Client) upsert(ctx context.Context, op, objectType, idProperty string, ids []string, props []map[string]string) (BatchResult, error) {
	if len(ids) == 0 {
		return BatchResult{}, nil
	}
	if len(ids) > MaxBatchSize {
		return BatchResult{}, fmt.Errorf("%s: %d inputs, at most %d: %w", op, len(ids), MaxBatchSize, ErrBatchTooLarge)
	}
	if c.token == "" {
		return BatchResult{}, fmt.Errorf("%s: %w", op, ErrNoAccessToken)
	}
	req := upsertRequest{Inputs: make([]upsertInput, len(ids))}
	seen := make(map[string]int, len(ids))
	for i, id := range ids {
		key := strings.ToLower(strings.TrimSpace(id))
		if key == "" {
			return BatchResult{}, fmt.Errorf("%s: input %d: %w", op, i, ErrEmptyID)
		}
		if j, dup := seen[key]; dup {
			return BatchResult{}, fmt.Errorf("%s: inputs %d and %d (%s): %w", op, j, i, id, ErrDuplicateID)
		}
		seen[key] = i
		p := props[i]
		if p == nil {
			p = map[string]string{}
		}
		req.Inputs[i] = upsertInput{IDProperty: idProperty, ID: id, Properties: p, ObjectWriteTraceID: strconv.Itoa(i)}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return BatchResult{}, fmt.Errorf("%s: encode request: %w", op, err)
	}

	status, header, respBody, err := c.post(ctx, "/crm/v3/objects/"+objectType+"/batch/upsert", body)
	if err != nil {
		return BatchResult{}, &Error{Op: op, Err: err}
	}
	rl := parseRateLimit(header)
	if status < 200 || status > 299 {
		return BatchResult{RateLimit: rl}, c.responseError(op, status, header, respBody, rl)
	}
	var resp batchResponse
	if err := json.Unmarshal(respBody, &resp); err != nil {
		// HubSpot answered 2xx, so the writes most likely happened; upserts are idempotent,
		// so the caller may safely send the batch again.
		return BatchResult{RateLimit: rl}, &Error{
			Op: op, StatusCode: status, Message: "undecodable batch response: " + err.Error(),
			CorrelationID: header.Get("X-HubSpot-Correlation-Id"), RateLimit: rl, unknownOutcome: true,
		}
	}
	return BatchResult{Records: c.matchRecords(op, status, idProperty, ids, seen, resp), RateLimit: rl}, nil
}

// matchRecords pairs HubSpot's results and errors with the inputs: by objectWriteTraceId
// first, else by the id value (the result's idProperty, or an error's context ids).
func (c *Client) matchRecords(op string, status int, idProperty string, ids []string, byKey map[string]int, resp batchResponse) []RecordResult {
	records := make([]RecordResult, len(ids))
	done := make([]bool, len(ids))
	for i, id := range ids {
		records[i].ID = id
	}
	index := func(traceID, id string) (int, bool) {
		if n, err := strconv.Atoi(traceID); err == nil && n >= 0 && n < len(ids) {
			return n, true
		}
		n, ok := byKey[strings.ToLower(strings.TrimSpace(id))]
		return n, ok
	}
	for _, r := range resp.Results {
		i, ok := index(r.ObjectWriteTraceID, r.Properties[idProperty])
		if !ok || done[i] {
			continue
		}
		records[i].ObjectID, records[i].New, done[i] = r.ID, r.New, true
	}
	var unattributed []batchError
	for _, e := range resp.Errors {
		var hits []int
		for _, t := range e.contextValues("objectWriteTraceId") {
			if i, ok := index(t, ""); ok {
				hits = append(hits, i)
			}
		}
		if len(hits) == 0 {
			for _, id := range append(e.contextValues("ids"), e.contextValues("id")...) {
				if i, ok := byKey[strings.ToLower(strings.TrimSpace(id))]; ok {
					hits = append(hits, i)
				}
			}
		}
		if len(hits) == 0 {
			unattributed = append(unattributed, e)
			continue
		}
		for _, i := range hits {
			if !done[i] {
				records[i].Err, done[i] = c.recordError(op, status, ids[i], e), true
			}
		}
	}
	for i := range records {
		if done[i] {
			continue
		}
		if len(unattributed) > 0 {
			records[i].Err = c.recordError(op, status, ids[i], unattributed[0])
			continue
		}
		records[i].Err = &Error{
			Op: op, ID: ids[i], StatusCode: status, unknownOutcome: true,
			Message: "HubSpot returned neither a result nor an error for this input",
		}
	}
	return records
}

func (c *Client) recordError(op string, status int, id string, e batchError) *Error {
	return &Error{
		Op: op, ID: id, StatusCode: status,
		Category: e.category(), SubCategory: e.subCategory(),
		Message: c.redact(e.Message), CorrelationID: e.CorrelationID, Details: e.Errors,
	}
}

// post sends one authenticated JSON POST under the client's timeout and reads the answer.
func (c *Client) post(ctx context.Context, path string, body []byte) (int, http.Header, []byte, error) {
	return c.send(ctx, http.MethodPost, path, body)
}

// send sends one authenticated JSON request under the client's timeout and reads the answer.
func (c *Client) send(ctx context.Context, method, path string, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// responseError turns a non-2xx answer into an *Error, keeping HubSpot's own message.
func (c *Client) responseError(op string, status int, h http.Header, body []byte, rl RateLimit) *Error {
	var eb errorBody
	_ = json.Unmarshal(body, &eb) // a non-JSON body (an edge proxy's page) is handled below
	e := &Error{
		Op: op, StatusCode: status,
		Category: eb.category(), SubCategory: eb.subCategory(),
		Message: c.redact(eb.Message), CorrelationID: eb.CorrelationID,
		PolicyName: eb.PolicyName, Details: eb.Errors, RateLimit: rl,
	}
	if e.CorrelationID == "" {
		e.CorrelationID = h.Get("X-HubSpot-Correlation-Id")
	}
	if e.Message == "" {
		e.Message = c.redact(snippet(body))
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.RetryAfter = retryWait(status, h, e.PolicyName, rl, c.now())
	return e
}

// redact removes the access token from text that came back from the server, so a message
// that echoes a header can never leak it into logs.
func (c *Client) redact(s string) string {
	if c.token == "" || !strings.Contains(s, c.token) {
		return s
	}
	return strings.ReplaceAll(s, c.token, "[redacted]")
}

// snippet is the start of a non-JSON body on one line, enough for ops to recognise it.
func snippet(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	const limit = 200
	for i := range s { // cut on a rune boundary
		if i >= limit {
			return s[:i] + "…"
		}
	}
	return s
}
