// Package pgbouncer starts PgBouncer in transaction mode in front of a PostgreSQL server: the
// local stand-in for the pooler the functions reach in production.
//
// In Lambda every function connects to Supabase's shared pooler, Supavisor, in transaction
// mode (port 6543), which Supabase recommends for serverless functions because they open many
// short-lived connections ("Connect to your database",
// https://supabase.com/docs/guides/database/connecting-to-postgres). The pooler shares a small
// set of database connections among many clients and lends one to a client for one
// transaction at a time, so session state (SET, LISTEN, advisory locks) does not carry over
// and Supavisor in transaction mode does not support prepared statements
// (https://supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL,
// https://supabase.com/docs/guides/self-hosting/accessing-postgres). What a new Lambda instance
// pays is therefore the pooler's client handshake (TCP, TLS, password authentication), not a
// new Postgres backend: the fork, the backend's authentication and its first compile of each
// PL/pgSQL function were paid once by whichever client first used that backend.
//
// PgBouncer in pool_mode = transaction behaves the same way, so it stands in for Supavisor in
// tests (the functions must work with a backend that changes between transactions) and in the
// cold-start measurement. Clients connect over TLS (a throwaway self-signed certificate; the
// client uses sslmode=require) with a SCRAM password, as they do to the real pooler.
package pgbouncer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled says the pgbouncer binary is not on this machine (Debian's package
// `pgbouncer` installs it; .ci/run does).
var ErrNotInstalled = errors.New("pgbouncer is not installed (apt-get install -y pgbouncer)")

// Password is the password clients give the pooler (SCRAM); the server behind it is reached
// with the upstream URL's own credentials.
const Password = "pooler-local"

// Options say what to put the pooler in front of and how many backends it may open.
type Options struct {
	// Upstream is a postgres:// URL of the server (its host, port, user and password are
	// used; its database is not: clients name theirs).
	Upstream string
	// PoolSize is the number of backends per database and user (default 2). PgBouncer opens
	// them all when the first client comes and keeps them (min_pool_size).
	PoolSize int
	// RoundRobin lends the idle backends in turn instead of the most recently used one first,
	// so consecutive transactions of one client run on different backends (a test of
	// behaviour behind the pooler wants that; PgBouncer's default reuses the warmest).
	RoundRobin bool
	// Port to listen on (127.0.0.1); zero picks a free one.
	Port int
}

// Pooler is a running PgBouncer.
type Pooler struct {
	// Port is where it listens on 127.0.0.1.
	Port     int
	user     string
	cmd      *exec.Cmd
	dir      string
	done     chan struct{}
	stopOnce sync.Once
	log      *bytes.Buffer
	logMu    *sync.Mutex
}

// Start writes PgBouncer's configuration into a temporary folder, starts it and waits until it
// accepts connections. Stop ends it.
func Start(ctx context.Context, o Options) (*Pooler, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/pgbouncer"); err != nil {
			return nil, ErrNotInstalled
		}
	}
	up, err := url.Parse(o.Upstream)
	if err != nil || (up.Scheme != "postgres" && up.Scheme != "postgresql") {
		return nil, errors.New("pgbouncer: the upstream must be a postgres:// URL")
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 2
	}
	if o.Port == 0 {
		if o.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	host, port := up.Hostname(), up.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	userName := up.User.Username()
	if userName == "" {
		userName = "postgres"
	}
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: make its folder: %w", err)
	}
	p := &Pooler{Port: o.Port, user: userName, dir: dir, done: make(chan struct{}), log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	if err := p.configure(host, port, up, o); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		// PgBouncer refuses to run as root; CI runs as root.
		if err := p.handTo("postgres"); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		args = append([]string{"-u", "postgres"}, args...)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = lockedWriter{p.log, p.logMu}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgbouncer: start: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	if err := p.waitListening(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// URL is a client's URL for database through the pooler: TLS required, SCRAM password.
func (p *Pooler) URL(database string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(p.user, Password), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)),
		Path: "/" + database, RawQuery: "sslmode=require"}
	return u.String()
}

// Via is the URL through the pooler for the same database as direct (a postgres:// URL).
func (p *Pooler) Via(direct string) (string, error) {
	u, err := url.Parse(direct)
	if err != nil || strings.TrimPrefix(u.Path, "/") == "" {
		return "", errors.New("pgbouncer: the database URL names no database")
	}
	return p.URL(strings.TrimPrefix(u.Path, "/")), nil
}

// Output is what PgBouncer has logged so far (for a failing test's message).
func (p *Pooler) Output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// Stop ends PgBouncer and removes its folder.
func (p *Pooler) Stop() {
	p.stopOnce.Do(func() {
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // SIGINT would wait for clients to leave
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		os.RemoveAll(p.dir)
	})
}

func (p *Pooler) configure(host, port string, up *url.URL, o Options) error {
	server := fmt.Sprintf("host=%s port=%s user=%s", host, port, p.user)
	if pw, ok := up.User.Password(); ok {
		server += " password=" + pw
	}
	roundRobin := 0
	if o.RoundRobin {
		roundRobin = 1
	}
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
pool_mode = transaction
default_pool_size = %d
min_pool_size = %d
server_round_robin = %d
auth_type = scram-sha-256
auth_file = %s
client_tls_sslmode = require
client_tls_key_file = %s
client_tls_cert_file = %s
; Not statement_timeout: the functions must connect through a PgBouncer left at its defaults,
; which refuses a connection that names it (shared/db sends it with set local instead).
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`, server, o.Port, o.PoolSize, o.PoolSize, roundRobin, p.path("users.txt"), p.path("key.pem"), p.path("cert.pem"))
	files := map[string][]byte{
		"pgbouncer.ini": []byte(ini),
	}
	verifier, err := scramVerifier(Password)
	if err != nil {
		return err
	}
	files["users.txt"] = []byte(fmt.Sprintf("%q %q\n", p.user, verifier))
	key, cert, err := selfSigned()
	if err != nil {
		return err
	}
	files["key.pem"], files["cert.pem"] = key, cert
	for name, b := range files {
		if err := os.WriteFile(p.path(name), b, 0o600); err != nil {
			return fmt.Errorf("pgbouncer: write %s: %w", name, err)
		}
	}
	return nil
}

// handTo gives the folder and its files to the account PgBouncer will switch to.
func (p *Pooler) handTo(account string) error {
	u, err := user.Lookup(account)
	if err != nil {
		return fmt.Errorf("pgbouncer: running as root needs the %s account: %w", account, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("pgbouncer: %w", err)
	}
	for _, e := range append([]string{""}, names(entries)...) {
		if err := os.Chown(filepath.Join(p.dir, e), uid, gid); err != nil {
			return fmt.Errorf("pgbouncer: hand its files to %s: %w", account, err)
		}
	}
	return nil
}

func (p *Pooler) path(name string) string { return filepath.Join(p.dir, name) }

func (p *Pooler) waitListening(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("pgbouncer: exited at start:\n%s", p.Output())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgbouncer: not listening on %s after 10 s:\n%s", addr, p.Output())
		}
	}
}

func names(entries []os.DirEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Name()
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgbouncer: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// scramVerifier is password's SCRAM-SHA-256 verifier as Postgres stores it in pg_authid (RFC
// 7677, 4096 iterations). Given the verifier, PgBouncer checks a client's proof without
// deriving the salted password at each login, as Supavisor does with the verifier it reads
// from the database; given the plain password it would run the 4096 iterations itself on
// every connection (about 7 ms here), a cost of the stand-in, not of the deployed shape.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("pgbouncer: make a SCRAM salt: %w", err)
	}
	const iterations = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("pgbouncer: derive the SCRAM key: %w", err)
	}
	mac := func(msg string) []byte {
		h := hmac.New(sha256.New, salted)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac("Server Key"))), nil
}

// selfSigned makes a throwaway key and certificate for the pooler's TLS (clients use
// sslmode=require, which encrypts without verifying, so nothing needs to trust it).
func selfSigned() (keyPEM, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pgbouncer: make a TLS key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pgbouncer: make a TLS certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pgbouncer: encode the TLS key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}
