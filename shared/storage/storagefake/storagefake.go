// Package storagefake is a local stand-in for Supabase Storage's object signing API, following
// its documented REST contract, for tests and `make dev` (the real service cannot be reached
// from here):
//
//   - POST /storage/v1/object/upload/sign/{bucket}/{path} → 200 {"url": "/object/upload/sign/{bucket}/{path}?token=…"}
//   - PUT  /storage/v1/object/upload/sign/{bucket}/{path}?token=… (the file) → 200 {"Key": "{bucket}/{path}"}
//   - POST /storage/v1/object/sign/{bucket}/{path} {"expiresIn": n} → 200 {"signedURL": "/object/sign/{bucket}/{path}?token=…"}
//   - GET  /storage/v1/object/sign/{bucket}/{path}?token=… → the file
//
// Signing calls need the service key as Bearer token; errors use Storage's body
// {"statusCode": "...", "error": "...", "message": "..."}; tokens are HS256 JWTs carrying the
// object's url and an expiry, as Storage's are (upload URLs live two hours). It can be switched
// down (503) or rate-limited (429), or slowed, at run time to exercise timeouts.
package storagefake

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portal-functions/portal-functions/shared/providerfake"
)

// DefaultServiceKey is the key `make dev` configures for the fake; it unlocks nothing else.
const DefaultServiceKey = "storagefake-local-service-role-key"

// UploadLifetime is how long a signed upload URL stays valid (Storage's fixed two hours).
const UploadLifetime = 2 * time.Hour

const maxObjectBytes = 10 << 20

// Mode is the fake's health, switched through the embedded Switch.
type Mode = providerfake.Mode

// The modes, as providerfake defines them: up serves normally; down answers 503 to everything;
// rate-limited answers 429, both with Storage's error body.
const (
	ModeUp          = providerfake.ModeUp
	ModeDown        = providerfake.ModeDown
	ModeRateLimited = providerfake.ModeRateLimited
)

// Object is a stored file.
type Object struct {
	Bucket, Path, ContentType string
	Data                      []byte
}

// Server is the fake Storage API, an http.Handler safe for concurrent use.
type Server struct {
	// Switch holds the mode, the latency and the call count (SetMode, SetLatency, Calls), and
	// Close releases the requests held back by latency.
	providerfake.Switch

	key    string
	secret []byte

	mu      sync.Mutex
	objects map[string]Object // "bucket/path"
	buckets map[string]Bucket
	mux     *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// New returns a fake that accepts serviceKey on its signing endpoints.
func New(serviceKey string) *Server {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s := &Server{key: serviceKey, secret: secret, objects: map[string]Object{}, buckets: map[string]Bucket{}, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /storage/v1/object/upload/sign/{bucket}/{path...}", s.signUpload)
	s.mux.HandleFunc("PUT /storage/v1/object/upload/sign/{bucket}/{path...}", s.upload)
	s.mux.HandleFunc("POST /storage/v1/object/sign/{bucket}/{path...}", s.signDownload)
	s.mux.HandleFunc("GET /storage/v1/object/sign/{bucket}/{path...}", s.download)
	s.mux.HandleFunc("GET /storage/v1/bucket/{id}", s.getBucket)
	s.mux.HandleFunc("POST /storage/v1/bucket", s.createBucket)
	s.mux.HandleFunc("PUT /storage/v1/bucket/{id}", s.updateBucket)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		storageError(w, http.StatusNotFound, "404", "not_found", "Route not found")
	})
	return s
}

// Put stores an object directly (as if a client had uploaded it).
func (s *Server) Put(bucket, path, contentType string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[bucket+"/"+path] = Object{Bucket: bucket, Path: path, ContentType: contentType, Data: append([]byte{}, data...)}
}

// Object returns a stored object.
func (s *Server) Object(bucket, path string) (Object, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[bucket+"/"+path]
	return o, ok
}

// ServeHTTP answers like Storage: outage and latency first, then the routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, ok := s.Enter(r)
	if !ok {
		return
	}
	switch mode {
	case ModeDown:
		storageError(w, http.StatusServiceUnavailable, "503", "service_unavailable", "Service Unavailable")
	case ModeRateLimited:
		storageError(w, http.StatusTooManyRequests, "429", "too_many_requests", "Too Many Requests")
	default:
		s.mux.ServeHTTP(w, r)
	}
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.key)) != 1 {
		storageError(w, http.StatusForbidden, "403", "Unauthorized", "invalid signature")
		return false
	}
	return true
}

type tokenClaims struct {
	URL    string `json:"url"`
	Upsert bool   `json:"upsert,omitempty"`
	jwt.RegisteredClaims
}

func (s *Server) token(objectURL string, upsert bool, ttl time.Duration) string {
	now := time.Now()
	c := tokenClaims{URL: objectURL, Upsert: upsert, RegisteredClaims: jwt.RegisteredClaims{
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	t, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.secret)
	return t
}

// checkToken verifies a signed URL's token for bucket/path.
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request, objectURL string) (tokenClaims, bool) {
	var c tokenClaims
	_, err := jwt.ParseWithClaims(r.URL.Query().Get("token"), &c, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil || c.URL != objectURL {
		msg := "invalid signature"
		if errors.Is(err, jwt.ErrTokenExpired) {
			msg = "jwt expired"
		}
		storageError(w, http.StatusBadRequest, "400", "InvalidJWT", msg)
		return c, false
	}
	return c, true
}

func objectURL(r *http.Request) string { return r.PathValue("bucket") + "/" + r.PathValue("path") }

func (s *Server) signUpload(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	u := objectURL(r)
	upsert := r.Header.Get("x-upsert") == "true"
	if _, exists := s.Object(r.PathValue("bucket"), r.PathValue("path")); exists && !upsert {
		storageError(w, http.StatusConflict, "409", "Duplicate", "The resource already exists")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"url": "/object/upload/sign/" + u + "?token=" + s.token(u, upsert, UploadLifetime),
	})
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	u := objectURL(r)
	c, ok := s.checkToken(w, r, u)
	if !ok {
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxObjectBytes))
	if err != nil {
		storageError(w, http.StatusRequestEntityTooLarge, "413", "Payload too large", "The object exceeded the maximum allowed size")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.objects[u]; exists && !c.Upsert {
		storageError(w, http.StatusConflict, "409", "Duplicate", "The resource already exists")
		return
	}
	s.objects[u] = Object{Bucket: r.PathValue("bucket"), Path: r.PathValue("path"), ContentType: r.Header.Get("Content-Type"), Data: data}
	writeJSON(w, http.StatusOK, map[string]string{"Key": u})
}

func (s *Server) signDownload(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	var body struct {
		ExpiresIn int `json:"expiresIn"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ExpiresIn < 1 {
		storageError(w, http.StatusBadRequest, "400", "InvalidRequest", "body/expiresIn must be >= 1")
		return
	}
	u := objectURL(r)
	if _, ok := s.Object(r.PathValue("bucket"), r.PathValue("path")); !ok {
		storageError(w, http.StatusNotFound, "404", "not_found", "Object not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"signedURL": "/object/sign/" + u + "?token=" + s.token(u, false, time.Duration(body.ExpiresIn)*time.Second),
	})
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	u := objectURL(r)
	if _, ok := s.checkToken(w, r, u); !ok {
		return
	}
	o, ok := s.Object(r.PathValue("bucket"), r.PathValue("path"))
	if !ok {
		storageError(w, http.StatusNotFound, "404", "not_found", "Object not found")
		return
	}
	if o.ContentType != "" {
		w.Header().Set("Content-Type", o.ContentType)
	}
	_, _ = w.Write(o.Data)
}

func storageError(w http.ResponseWriter, status int, code, name, msg string) {
	writeJSON(w, status, map[string]string{"statusCode": code, "error": name, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// TestServer is a fake on a local port for one test.
type TestServer struct {
	*Server
	srv *httptest.Server
}

// NewTest starts a fake accepting serviceKey and stops it when t ends.
func NewTest(t testing.TB, serviceKey string) *TestServer {
	t.Helper()
	s := New(serviceKey)
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	return &TestServer{Server: s, srv: srv}
}

// URL is the fake project's base URL, to use as SUPABASE_URL (Storage is under /storage/v1).
func (ts *TestServer) URL() string { return ts.srv.URL }

// String names the fake for logs.
func (ts *TestServer) String() string { return fmt.Sprintf("storagefake at %s", ts.srv.URL) }
