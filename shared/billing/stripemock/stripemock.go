// Package stripemock runs Stripe's own mock server, stripe-mock (the Go module
// github.com/stripe/stripe-mock, pinned as a Go tool in go.mod), for tests, and reads the
// fixtures it ships, so tests talk to Stripe's published API contract and build events from
// Stripe's own object shapes instead of hand-written JSON.
//
// stripe-mock is stateless: it validates each request against Stripe's OpenAPI spec and
// answers with a fixture. Tests can assert that a request was accepted and the response's
// shape, not that state persisted between calls.
package stripemock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Module is the Go module path of stripe-mock.
const Module = "github.com/stripe/stripe-mock"

// ErrNoAddress is a stripe-mock that exited or never said where it listens.
var ErrNoAddress = errors.New("stripe-mock did not report its HTTP address")

// module finds stripe-mock's module folder and version as go.mod pins it.
func module(t testing.TB) (dir, version string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}|{{.Version}}", Module).Output()
	if err != nil {
		t.Fatalf("stripemock: go list -m %s: %v", Module, err)
	}
	dir, version, _ = strings.Cut(strings.TrimSpace(string(out)), "|")
	if dir == "" {
		t.Fatalf("stripemock: %s is not downloaded (go mod download %s)", Module, Module)
	}
	return dir, version
}

// Binary builds stripe-mock once per version into the temp folder (shared by every test
// binary; the build is atomic, by rename) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	_, version := module(t)
	dir := filepath.Join(os.TempDir(), "portal-functions-stripe-mock-"+version)
	bin := filepath.Join(dir, "stripe-mock")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	tmp, err := os.CreateTemp(dir, "build-*")
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	_ = tmp.Close()
	if out, err := exec.Command("go", "build", "-o", tmp.Name(), Module).CombinedOutput(); err != nil {
		_ = os.Remove(tmp.Name())
		t.Fatalf("stripemock: go build %s: %v\n%s", Module, err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	return bin
}

// Start runs a stripe-mock on a free local port for the rest of t and returns its base URL
// (for STRIPE_API_BASE).
func Start(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(Binary(t), "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("stripemock: start: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// stripe-mock parses Stripe's whole OpenAPI spec before it listens: seconds when the machine
	// is quiet, much longer when every core is busy compiling and testing.
	addr, err := listenAddress(stdout, 2*time.Minute)
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	return "http://" + addr
}

// listenAddress reads stripe-mock's output until it says where HTTP listens, then keeps
// draining it in the background so the process never blocks on a full pipe.
func listenAddress(r io.Reader, timeout time.Duration) (string, error) {
	const prefix = "Listening for HTTP at address: "
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sent := false
		for sc.Scan() {
			if line := sc.Text(); !sent && strings.HasPrefix(line, prefix) {
				found <- strings.TrimSpace(strings.TrimPrefix(line, prefix))
				sent = true
			}
		}
		if !sent {
			close(found)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case addr, ok := <-found:
		if !ok {
			return "", ErrNoAddress
		}
		return addr, nil
	case <-ctx.Done():
		return "", fmt.Errorf("%w within %s", ErrNoAddress, timeout)
	}
}

// Fixture returns a copy of Stripe's fixture object for resource ("invoice", "subscription",
// "checkout.session", "event", ...), from embedded/openapi/fixtures3.json in stripe-mock's
// module folder.
func Fixture(t testing.TB, resource string) map[string]any {
	t.Helper()
	all, err := Fixtures()
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	obj, ok := all[resource]
	if !ok {
		t.Fatalf("stripemock: no fixture for %q", resource)
	}
	return obj
}

// Fixtures reads every fixture object stripe-mock ships, by resource name, outside a test:
// the dev server's "send a Stripe event" builds its events from them.
func Fixtures() (map[string]map[string]any, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m %s: %w", Module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, fmt.Errorf("%s is not downloaded (go mod download %s)", Module, Module)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "embedded", "openapi", "fixtures3.json"))
	if err != nil {
		return nil, fmt.Errorf("read stripe-mock fixtures: %w", err)
	}
	var all struct {
		Resources map[string]map[string]any `json:"resources"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("decode stripe-mock fixtures: %w", err)
	}
	return all.Resources, nil
}
