// Package storage signs Supabase Storage URLs for ticket attachments: upload URLs a portal
// puts the file to directly (so file bytes never pass through a Lambda), and short-lived
// download URLs the helpdesk worker links from the Zendesk ticket.
//
// It wraps supabase-go's Storage client (the Storage field of supabase.NewClient, a
// github.com/supabase-community/storage-go client) and adds what that client lacks: a context
// and a bounded timeout on every call, and errors that say whether Storage was unreachable
// (retry later) or refused (the object does not exist, the key is wrong).
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	storage_go "github.com/supabase-community/storage-go"
	"github.com/supabase-community/supabase-go"

	"github.com/portal-functions/portal-functions/shared/config"
)

// Errors callers branch on with errors.Is.
var (
	// ErrUnavailable means Storage could not be reached or answered 5xx/429 in time: the same
	// call may work later.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrNotFound means the bucket or object does not exist (e.g. an attachment that was
	// never uploaded).
	ErrNotFound = errors.New("storage object not found")
	// ErrMissingConfig means Config lacks the project URL, the service key or the bucket.
	ErrMissingConfig = errors.New("storage: missing configuration")
)

// UploadURLLifetime is how long Supabase Storage keeps a signed upload URL valid (fixed by the
// server; the API takes no expiry for uploads).
const UploadURLLifetime = 2 * time.Hour

// DefaultTimeout bounds each call when Config.Timeout is zero: a request path must not hang
// on Storage.
const DefaultTimeout = 3 * time.Second

// Config names one bucket of one Supabase project. It maps to SUPABASE_URL,
// SUPABASE_SERVICE_ROLE_KEY and STORAGE_BUCKET.
type Config struct {
	// SupabaseURL is the project URL, e.g. https://abc.supabase.co (Storage is at /storage/v1).
	SupabaseURL string
	// ServiceRoleKey signs the requests; it never leaves the server.
	ServiceRoleKey config.Secret
	// Bucket holds the attachments (a private bucket).
	Bucket string
	// Timeout bounds each call (DefaultTimeout when zero).
	Timeout time.Duration
}

// Error is a failed Storage call: what we tried, Storage's status and message.
type Error struct {
	Op         string
	StatusCode int // 0 when no answer arrived
	Message    string
	Err        error
}

// Error renders the call, the status and Storage's message; never the key.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "storage: %s", e.Op)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the transport error and the sentinel that classifies the failure.
func (e *Error) Unwrap() []error {
	out := []error{}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	switch {
	case e.StatusCode == 0, e.StatusCode == http.StatusTooManyRequests, e.StatusCode >= 500:
		out = append(out, ErrUnavailable)
	case e.StatusCode == http.StatusNotFound, e.StatusCode == http.StatusBadRequest && strings.Contains(strings.ToLower(e.Message), "not found"):
		// Storage answers a missing object with 400 or 404 depending on the version.
		out = append(out, ErrNotFound)
	}
	return out
}

// Client signs URLs in one bucket. It is safe for concurrent use.
type Client struct {
	sc      *storage_go.Client
	base    string // .../storage/v1
	bucket  string
	timeout time.Duration
}

// New builds a client; it makes no network call.
func New(cfg Config) (*Client, error) {
	var missing []string
	if strings.TrimSpace(cfg.SupabaseURL) == "" {
		missing = append(missing, "SupabaseURL")
	}
	if cfg.ServiceRoleKey.Reveal() == "" {
		missing = append(missing, "ServiceRoleKey")
	}
	if strings.TrimSpace(cfg.Bucket) == "" {
		missing = append(missing, "Bucket")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrMissingConfig, strings.Join(missing, ", "))
	}
	u, err := url.Parse(strings.TrimRight(cfg.SupabaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: SupabaseURL must be an absolute http(s) URL", ErrMissingConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	sb, err := supabase.NewClient(u.String(), cfg.ServiceRoleKey.Reveal(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: supabase client: %w", ErrMissingConfig, err)
	}
	return &Client{sc: sb.Storage, base: u.String() + supabase.STORGAGE_URL, bucket: cfg.Bucket, timeout: cfg.Timeout}, nil
}

// SignUpload asks Storage for a signed upload URL for objectPath (POST
// /object/upload/sign/{bucket}/{path}): a URL a client PUTs one file to without further
// credentials, and when it stops working. Uploads never overwrite an existing object.
func (c *Client) SignUpload(ctx context.Context, objectPath string) (string, time.Time, error) {
	const op = "sign upload URL"
	start := time.Now()
	var out storage_go.SignedUploadUrlResponse
	if err := c.post(ctx, op, "/object/upload/sign/"+c.bucket+"/"+escapePath(objectPath), struct{}{}, &out); err != nil {
		return "", time.Time{}, err
	}
	if !strings.Contains(out.Url, "token=") {
		return "", time.Time{}, &Error{Op: op, StatusCode: http.StatusOK, Message: "no token in the signed URL"}
	}
	return c.base + out.Url, start.Add(UploadURLLifetime).UTC(), nil
}

// SignDownload asks Storage for a download URL of objectPath valid for ttl (POST
// /object/sign/{bucket}/{path}). A missing object is ErrNotFound.
func (c *Client) SignDownload(ctx context.Context, objectPath string, ttl time.Duration) (string, error) {
	const op = "sign download URL"
	secs := int(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	var out storage_go.SignedUrlResponse
	if err := c.post(ctx, op, "/object/sign/"+c.bucket+"/"+escapePath(objectPath), map[string]int{"expiresIn": secs}, &out); err != nil {
		return "", err
	}
	if out.SignedURL == "" {
		return "", &Error{Op: op, StatusCode: http.StatusOK, Message: "no signedURL in the answer"}
	}
	return c.base + out.SignedURL, nil
}

// post sends one POST through the storage-go client (see call).
func (c *Client) post(ctx context.Context, op, path string, body, out any) error {
	return c.call(ctx, op, http.MethodPost, path, body, out)
}

// call sends one request through the storage-go client with ctx and the timeout attached (the
// library's own methods take no context).
func (c *Client) call(ctx context.Context, op, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.sc.NewRequest(method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("storage: %s: build request: %w", op, err)
	}
	resp, err := c.sc.Do(req.WithContext(ctx), out)
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	if err == nil {
		return nil
	}
	var se *storage_go.StorageError
	if resp != nil && errors.As(err, &se) {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: se.Message}
	}
	if resp != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: "unreadable answer", Err: err}
	}
	return &Error{Op: op, Err: err}
}

// escapePath percent-encodes each segment of an object path (names may hold spaces).
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
