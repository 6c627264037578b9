// Package rie runs a function's bootstrap under the AWS Lambda Runtime Interface Emulator
// (github.com/aws/aws-lambda-runtime-interface-emulator, pinned as a Go tool in go.mod) and
// invokes it, as `sam local invoke` does inside its container but without Docker. `make
// invoke` and the function tests use it, so what they exercise is the very binary Lambda runs,
// speaking the real Runtime API.
package rie

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ToolPackage is the RIE's main package, pinned by go.mod's tool directive.
const ToolPackage = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"

// Errors a caller can tell apart.
var (
	// ErrNotReady is an emulator that did not accept an invocation in time.
	ErrNotReady = errors.New("rie: emulator did not start")
	// ErrNoReport is an invocation whose REPORT line never appeared.
	ErrNoReport = errors.New("rie: no REPORT line")
)

// Build compiles packages (Go import paths or ./relative to dir) into outDir for this machine's
// Linux architecture, with the flags the Makefile uses for Lambda (static, lambda.norpc,
// stripped). One `go build` builds them all, so shared packages compile once.
func Build(ctx context.Context, dir, outDir string, pkgs ...string) error {
	arch, err := exec.CommandContext(ctx, "go", "env", "GOARCH").Output()
	if err != nil {
		return fmt.Errorf("go env GOARCH: %w", err)
	}
	args := append([]string{"build", "-trimpath", "-tags", "lambda.norpc", "-ldflags=-s -w", "-o", outDir + string(os.PathSeparator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+strings.TrimSpace(string(arch)), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// Options describe one emulated function.
type Options struct {
	// RIE is the path of the aws-lambda-rie binary; Bootstrap the function's binary.
	RIE       string
	Bootstrap string
	// Env is the function's whole environment (nothing of the caller's leaks in).
	Env map[string]string
	// FunctionName, Timeout and MemoryMB are what Lambda would report (defaults: "function",
	// 30 s, 256 MB).
	FunctionName string
	Timeout      time.Duration
	MemoryMB     int
	// Output also receives everything the emulator and the function print (nil: kept only).
	Output io.Writer
}

// Emulator is a running RIE with one function behind it.
type Emulator struct {
	cmd  *exec.Cmd
	addr string
	out  *buffer
	done chan struct{}
	// client is this emulator's own: a shared one could hand an invocation a kept-alive
	// connection to an earlier, stopped emulator that had the same port, and the POST
	// (which Go's transport does not retry) would fail with EOF, never reaching this one.
	client *http.Client
}

// Start launches the emulator on free loopback ports. Stop it with Stop. A port found free can
// be taken by another process before the emulator binds it (the emulator then exits with
// "address already in use"): Start tries again on new ports, up to three times.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if o.FunctionName == "" {
		o.FunctionName = "function"
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = 256
	}
	for attempt := 1; ; attempt++ {
		e, err := start(ctx, o)
		if err == nil || attempt == 3 || !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "address already in use") {
			return e, err
		}
	}
}

// start launches the emulator once, on ports that were free a moment ago.
func start(ctx context.Context, o Options) (*Emulator, error) {
	apiAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	runtimeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, o.RIE,
		"--log-level", "warn",
		"--runtime-interface-emulator-address", apiAddr,
		"--runtime-api-address", runtimeAddr,
		o.Bootstrap)
	env := []string{
		"AWS_LAMBDA_FUNCTION_NAME=" + o.FunctionName,
		"AWS_LAMBDA_FUNCTION_TIMEOUT=" + strconv.Itoa(int(o.Timeout/time.Second)),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(o.MemoryMB),
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"TZ=UTC",
	}
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	out := &buffer{}
	var w io.Writer = out
	if o.Output != nil {
		w = io.MultiWriter(out, o.Output)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.RIE, err)
	}
	e := &Emulator{cmd: cmd, addr: apiAddr, out: out, done: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	go func() { _ = cmd.Wait(); close(e.done) }()
	if err := e.waitListening(ctx, 10*time.Second); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Result is one invocation's outcome.
type Result struct {
	// StatusCode is the emulator's HTTP status: 200 for a result (a function's returned error
	// included: its body then holds errorType and errorMessage), 502 when the runtime failed
	// to start or crashed (the reason is in Output).
	StatusCode int
	Body       []byte
	// Report is the REPORT line and what it says (empty when StatusCode is not 200).
	Report Report
	// Elapsed is the invocation's wall time as the caller saw it. On the first invocation it
	// includes the runtime's start and the function's init: the cold start as a client feels
	// it. (This RIE's Init Duration only times the hand-off to the runtime, not the init.)
	Elapsed time.Duration
}

// Report is the emulator's REPORT line, the one CloudWatch shows after every invocation.
type Report struct {
	Line string
	// InitDuration is what the RIE reports for the first invocation (zero on a warm one).
	InitDuration time.Duration
	Duration     time.Duration
}

// Invoke posts payload as an invocation and waits for the result and its REPORT line.
func (e *Emulator) Invoke(ctx context.Context, payload []byte) (Result, error) {
	id := uuid.NewString()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+e.addr+"/2015-03-31/functions/function/invocations", bytes.NewReader(payload))
	if err != nil {
		return Result{}, fmt.Errorf("build invocation: %w", err)
	}
	req.Header.Set("X-Amzn-RequestId", id)
	start := time.Now()
	res, err := e.client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("invoke: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return Result{}, fmt.Errorf("read invocation result: %w", err)
	}
	r := Result{StatusCode: res.StatusCode, Body: body, Elapsed: time.Since(start)}
	if r.StatusCode != http.StatusOK {
		// An init or function failure: the emulator answers 502 before any REPORT line.
		return r, nil
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if rep, ok := findReport(e.out.String(), id); ok {
			r.Report = rep
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%w for request %s", ErrNoReport, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Output is everything the emulator and the function printed so far.
func (e *Emulator) Output() string { return e.out.String() }

// Stop ends the emulator (and with it the function) and waits for it.
func (e *Emulator) Stop() {
	e.client.CloseIdleConnections()
	if e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(os.Interrupt)
		select {
		case <-e.done:
			return
		case <-time.After(2 * time.Second):
			_ = e.cmd.Process.Kill()
		}
	}
	<-e.done
}

func (e *Emulator) waitListening(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-e.done:
			return fmt.Errorf("%w: it exited:\n%s", ErrNotReady, e.out.String())
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		default:
		}
		conn, err := net.DialTimeout("tcp", e.addr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("%w within %s:\n%s", ErrNotReady, within, e.out.String())
}

var (
	reportLine = regexp.MustCompile(`REPORT RequestId: (\S+)\t.*`)
	initDur    = regexp.MustCompile(`Init Duration: ([0-9.]+) ms`)
	dur        = regexp.MustCompile(`\tDuration: ([0-9.]+) ms`)
)

func findReport(out, id string) (Report, bool) {
	for _, m := range reportLine.FindAllStringSubmatch(out, -1) {
		if m[1] != id {
			continue
		}
		rep := Report{Line: strings.TrimSpace(m[0])}
		if d := initDur.FindStringSubmatch(m[0]); d != nil {
			rep.InitDuration = ms(d[1])
		}
		if d := dur.FindStringSubmatch(m[0]); d != nil {
			rep.Duration = ms(d[1])
		}
		return rep, true
	}
	return Report{}, false
}

func ms(s string) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	return time.Duration(f * float64(time.Millisecond))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buffer is a goroutine-safe bytes.Buffer (the emulator writes while a test reads).
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
