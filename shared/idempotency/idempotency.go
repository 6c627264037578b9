// Package idempotency makes a write safe to repeat, with the semantics of Powertools for AWS
// Lambda's idempotency utility, over private.idempotency_keys:
//
//   - a record is keyed by (scope, key): the scope names the function and the tenant or user
//     ("ticket-create:<tenant>:<user>"), the key is the client's Idempotency-Key header or a
//     provider's event id;
//   - the first request claims the record in_progress (in its own short transaction, so other
//     attempts see the claim at once), runs, and stores its response as completed in the SAME
//     transaction as its side effects, so either both commit or neither does;
//   - a repeat with the same request (by hash) replays the stored status, headers and body
//     exactly, with Idempotent-Replayed: true; a repeat while the first still runs gets 409
//     with Retry-After; the same key with another request gets 422;
//   - an in_progress record past its lock (the function's timeout) is taken over, so a crashed
//     attempt can be retried; a completed record past its expiry (24 h by default) runs again;
//     expired records are deleted a few at a time when keys are claimed, so no cron is needed.
//
// Only successful (2xx) responses are stored. Any other answer rolls the transaction back and
// releases the claim, so the same key can be retried once the cause is fixed: nothing happened,
// so there is nothing to replay (Powertools deletes the record on an exception the same way).
//
// Each claim carries its lock deadline as a fencing token: if an attempt overran its lock and
// another took over, the late attempt's completion matches no row and its transaction rolls
// back, so the side effects still happen once.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Defaults of Options.
const (
	DefaultHeader        = "Idempotency-Key"
	DefaultInProgressTTL = 30 * time.Second
	DefaultExpiry        = 24 * time.Hour
	// HeaderReplayed marks a response that was replayed from a stored record.
	HeaderReplayed = "Idempotent-Replayed"
	// MaxKeyLength bounds a key (the column's check constraint says the same).
	MaxKeyLength = 255
	// cleanupBatch bounds how many expired records one claim deletes.
	cleanupBatch = 5
	// claimAttempts bounds the retries when a record vanishes between claim and look-up.
	claimAttempts = 3
)

// Errors of this package. Each comes back inside a *problem.Problem with the right status, so
// errors.Is works and web.Error answers it without a mapping of its own.
var (
	// ErrInProgress: another attempt with the key is running (409, retry after Retry-After).
	ErrInProgress = errors.New("idempotency key in progress")
	// ErrKeyReused: the key was used for a different request (422, permanent).
	ErrKeyReused = errors.New("idempotency key reused with a different request")
	// ErrMissingKey: the route requires a key and none was sent (400).
	ErrMissingKey = errors.New("idempotency key missing")
	// ErrInvalidKey: the key is empty, too long or not printable ASCII (400).
	ErrInvalidKey = errors.New("idempotency key invalid")
	// ErrNoScope: Options.Scope is nil (a wiring bug).
	ErrNoScope = errors.New("idempotency options need a Scope")

	// errNotStored rolls a transaction back on purpose: the handler did not succeed.
	errNotStored = errors.New("response not stored")
)

// Options configure one idempotent route.
type Options struct {
	// Scope names whose keys these are, e.g. "ticket-create:"+tenant+":"+user; keys of
	// different scopes never meet. Required.
	Scope func(r *http.Request) (string, error)
	// Required refuses requests without a key (400). Without it such requests run
	// unprotected, still in one transaction.
	Required bool
	// InProgressTTL is how long a claim holds before another attempt may take over: the
	// function's timeout (default 30 s).
	InProgressTTL time.Duration
	// Expiry is how long a completed response is replayed (default 24 h).
	Expiry time.Duration
	// Header carries the key (default Idempotency-Key).
	Header string
}

func (o Options) withDefaults() Options {
	if o.InProgressTTL <= 0 {
		o.InProgressTTL = DefaultInProgressTTL
	}
	if o.Expiry <= 0 {
		o.Expiry = DefaultExpiry
	}
	if o.Header == "" {
		o.Header = DefaultHeader
	}
	return o
}

// Response is what a handler answered, as stored and replayed.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// TxHandler is an HTTP handler that does its database work in tx, the transaction the
// idempotency record is completed in.
type TxHandler func(w http.ResponseWriter, r *http.Request, tx pgx.Tx)

// Store keeps idempotency records in the database of its pool.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store over pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// ValidKey reports whether key may be used: 1 to 255 printable ASCII characters.
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLength {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// HashRequest is the request fingerprint a key is bound to: method, path, query and body,
// length-prefixed so no two different requests share an encoding.
func HashRequest(method, path, rawQuery string, body []byte) []byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), []byte(path), []byte(rawQuery), body} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(part)))
		h.Write(part)
	}
	return h.Sum(nil)
}

// Handler runs h at most once per (scope, key): see the package comment. Options.Scope must
// be set; Handler panics otherwise, at wiring time.
func (s *Store) Handler(opts Options, h TxHandler) http.Handler {
	if opts.Scope == nil {
		panic(ErrNoScope)
	}
	opts = opts.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(opts.Header)
		if key == "" && !opts.Required {
			s.serveUnprotected(w, r, h)
			return
		}
		if key == "" {
			web.Error(w, r, problem.New(http.StatusBadRequest, problem.TypeIdempotencyKey, "Idempotency key required",
				"send an "+opts.Header+" header (1 to 255 printable ASCII characters, e.g. a UUID) so a retry cannot run twice").
				WithCause(ErrMissingKey))
			return
		}
		if !ValidKey(key) {
			web.Error(w, r, problem.New(http.StatusBadRequest, problem.TypeIdempotencyKey, "Idempotency key invalid",
				"the "+opts.Header+" header must be 1 to 255 printable ASCII characters").WithCause(ErrInvalidKey))
			return
		}
		scope, err := opts.Scope(r)
		if err != nil {
			web.Error(w, r, fmt.Errorf("idempotency scope: %w", err))
			return
		}
		body, err := readBody(r)
		if err != nil {
			web.Error(w, r, err)
			return
		}
		hash := HashRequest(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body)
		resp, replayed, err := s.do(r.Context(), scope, key, hash, opts, func(tx pgx.Tx) (Response, error) {
			return record(r, tx, h), nil
		})
		if err != nil {
			web.Error(w, r, err)
			return
		}
		if replayed {
			w.Header().Set(HeaderReplayed, "true")
		}
		write(w, resp)
	})
}

// serveUnprotected runs h without a record: one transaction, committed on 2xx only.
func (s *Store) serveUnprotected(w http.ResponseWriter, r *http.Request, h TxHandler) {
	var resp Response
	err := db.PipeTx(r.Context(), s.pool, nil, func(p *db.Pipe) error {
		resp = record(r, p, h)
		if !success(resp.Status) {
			return errNotStored
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNotStored) {
		web.Error(w, r, fmt.Errorf("commit: %w", err))
		return
	}
	write(w, resp)
}

// Do runs fn at most once per (scope, key) for requests hashing to requestHash, with the
// default TTL and expiry: a repeat returns the stored response and replayed = true. fn's
// database work goes in tx; a 2xx Response is stored as completed in that transaction, anything
// else (or an error) rolls it back and releases the key. Webhooks use it with the event id
// as key.
func (s *Store) Do(ctx context.Context, scope, key string, requestHash []byte,
	fn func(tx pgx.Tx) (Response, error)) (Response, bool, error) {
	if !ValidKey(key) {
		return Response{}, false, problem.BadRequest("the idempotency key must be 1 to 255 printable ASCII characters").
			WithCause(ErrInvalidKey)
	}
	return s.do(ctx, scope, key, requestHash, Options{}.withDefaults(), fn)
}

func (s *Store) do(ctx context.Context, scope, key string, hash []byte, opts Options,
	fn func(tx pgx.Tx) (Response, error)) (Response, bool, error) {
	token, stored, err := s.claim(ctx, scope, key, hash, opts)
	if err != nil {
		return Response{}, false, err
	}
	if stored != nil {
		return *stored, true, nil
	}
	released := false
	release := func() {
		if !released {
			released = true
			s.release(ctx, scope, key, token)
		}
	}
	defer release() // also on panic: the key must not stay locked for the whole TTL
	var resp Response
	// The business transaction is a db.Pipe: its writes whose answers nobody waits for (the
	// completion below, and whatever fn defers) go to the database with the commit, in one
	// round trip.
	err = db.PipeTx(ctx, s.pool, nil, func(p *db.Pipe) error {
		var err error
		resp, err = fn(p)
		if err != nil {
			return err
		}
		if !success(resp.Status) {
			return errNotStored
		}
		return complete(p, scope, key, token, resp)
	})
	switch {
	case err == nil:
		released = true // completed: nothing to release
		return resp, false, nil
	case errors.Is(err, errNotStored):
		return resp, false, nil
	case isClaimLost(err):
		return Response{}, false, inProgress(1).WithCause(fmt.Errorf("%w: claim lost to a later attempt", ErrInProgress))
	default:
		return Response{}, false, err
	}
}

// claim takes the record for this attempt and returns its fencing token, or the stored
// response to replay, or a problem (in progress, reused), in one round trip
// (private.idempotency_claim): a live record is returned as it is and nothing is written, so
// replays and 409s write nothing; only a free, expired or lapsed key is claimed, by an upsert
// that deletes a few expired records of other keys in passing.
func (s *Store) claim(ctx context.Context, scope, key string, hash []byte, opts Options) (time.Time, *Response, error) {
	for range claimAttempts {
		var (
			token      *time.Time
			status     *string
			storedHash []byte
			resp       Response
			rawHeader  []byte
			respStatus *int
			retryAfter *int
		)
		err := s.pool.QueryRow(ctx, `select * from private.idempotency_claim($1, $2, $3, $4, $5, $6)`,
			scope, key, hash, opts.InProgressTTL.Microseconds(), opts.Expiry.Microseconds(), cleanupBatch,
		).Scan(&token, &status, &storedHash, &respStatus, &rawHeader, &resp.Body, &retryAfter)
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("claim idempotency key: %w", db.Classify(err))
		}
		switch {
		case token != nil:
			return *token, nil, nil
		case status == nil:
			// Another attempt claimed the key after this statement's snapshot was taken (the
			// upsert found its row, the read did not): look again.
			continue
		case !bytes.Equal(storedHash, hash):
			return time.Time{}, nil, problem.New(http.StatusUnprocessableEntity, problem.TypeIdempotencyReused,
				"Idempotency key reused", "this idempotency key was already used for a different request; use a new key").
				WithCause(ErrKeyReused)
		case *status != "completed" || respStatus == nil:
			return time.Time{}, nil, inProgress(*retryAfter)
		}
		resp.Status = *respStatus
		if len(rawHeader) > 0 {
			if err := json.Unmarshal(rawHeader, &resp.Header); err != nil {
				return time.Time{}, nil, fmt.Errorf("read stored headers: %w", err)
			}
		}
		return time.Time{}, &resp, nil
	}
	return time.Time{}, nil, inProgress(1)
}

func inProgress(retryAfter int) *problem.Problem {
	return problem.New(http.StatusConflict, problem.TypeIdempotencyBusy, "Request in progress",
		"a request with this idempotency key is still being processed; retry shortly").
		WithHeader("Retry-After", strconv.Itoa(retryAfter)).
		WithCause(ErrInProgress)
}

// complete stores resp as the record's outcome inside the business transaction, if this
// attempt still holds the claim (token). The call goes with the commit (deferred on p); when
// the claim was lost, private.idempotency_complete raises (errClaimLost's SQLSTATE) and the
// transaction rolls back on the server.
func complete(p *db.Pipe, scope, key string, token time.Time, resp Response) error {
	header, err := json.Marshal(storable(resp.Header))
	if err != nil {
		return fmt.Errorf("encode response headers: %w", err)
	}
	body := resp.Body
	if body == nil {
		body = []byte{}
	}
	p.DeferCall("private.idempotency_complete", nil, nil, scope, key, token, resp.Status, header, body)
	return nil
}

// claimLostCode is the SQLSTATE private.idempotency_complete raises when the attempt's lock
// ran out and another attempt took over: that one does the work, not this one.
const claimLostCode = "PFI01"

func isClaimLost(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == claimLostCode
}

// release deletes this attempt's claim so the key can be retried at once. Best effort: if it
// fails, the claim lapses at its lock deadline anyway.
func (s *Store) release(ctx context.Context, scope, key string, token time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `
		delete from private.idempotency_keys
		where scope = $1 and key = $2 and status = 'in_progress' and locked_until = $3`,
		scope, key, token); err != nil {
		web.Logger(ctx).Warn("release idempotency key", "error", err.Error())
	}
}

// readBody reads the whole body for hashing and puts it back for the handler.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, problem.TooLarge(maxErr.Limit).WithCause(err)
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

func success(status int) bool { return status >= 200 && status < 300 }

// storable copies h without the headers that belong to one transmission rather than to the
// response being replayed.
func storable(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		switch http.CanonicalHeaderKey(k) {
		case "Date", "Content-Length", "Connection", "Transfer-Encoding", web.HeaderRequestID:
			continue
		}
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// record runs h against a buffer and returns what it answered.
func record(r *http.Request, tx pgx.Tx, h TxHandler) Response {
	buf := &bufferedWriter{header: http.Header{}}
	h(buf, r, tx)
	status := buf.status
	if status == 0 {
		status = http.StatusOK
	}
	return Response{Status: status, Header: buf.header, Body: buf.body.Bytes()}
}

// write sends resp on w, keeping the headers the middleware already set.
func write(w http.ResponseWriter, resp Response) {
	for k, vs := range resp.Header {
		w.Header()[k] = append([]string(nil), vs...)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// bufferedWriter holds a response until its transaction has committed: a client must never
// see a 201 for work that then rolls back.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

var _ http.ResponseWriter = (*bufferedWriter)(nil)

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
