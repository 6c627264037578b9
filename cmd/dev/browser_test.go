package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// chromiumPath is Debian's Chromium (`apt-get install chromium`; .ci/run installs it).
// CHROMIUM overrides it.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// widths are the two layouts every page is checked at: a small phone and a laptop.
var widths = []int64{375, 1280}

// browser is one headless Chromium tab on the dev server, with what the page did recorded:
// API answers by path, failed uploads, console errors and CSP violations.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	axe   string
	shots string
	width int64
	loads int

	mu       sync.Mutex
	statuses []apiAnswer
	problems []string
	paused   chan *fetch.EventRequestPaused
}

type apiAnswer struct {
	url    string
	status int64
}

// newBrowser starts Chromium as the machine's notes require (root, no sandbox, no network
// beyond loopback) with a fresh profile. Missing Chromium or axe-core fails the test loudly:
// the browser tests never skip.
func newBrowser(t *testing.T, base, root string) *browser {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Chromium is missing at %s: install it with `apt-get update && apt-get install -y chromium` (.ci/run does), or set CHROMIUM; the browser tests do not skip", path)
	}
	axePath := filepath.Join(root, "node_modules", "axe-core", "axe.min.js")
	axe, err := os.ReadFile(axePath)
	if err != nil {
		t.Fatalf("axe-core is missing (%v): run `npm ci` at the repository root (.ci/run does); the browser tests do not skip", err)
	}
	shots := filepath.Join(root, "artifacts", "screenshots")
	require.NoError(t, os.MkdirAll(shots, 0o755))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx, base: base, axe: string(axe), shots: shots, paused: make(chan *fetch.EventRequestPaused, 64)}
	// The first Run starts the browser; it must not carry a timeout (that would end Chromium).
	require.NoError(t, chromedp.Do(ctx))
	require.NoError(t, chromedp.Listen(ctx, b.observe))
	return b
}

// observe records what the tests assert on later (it runs on chromedp's reader: no commands).
func (b *browser) observe(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventResponseReceived:
		b.statuses = append(b.statuses, apiAnswer{url: e.Response.URL, status: e.Response.Status})
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+e.ExceptionDetails.Text+" "+remoteText(e.ExceptionDetails.Exception))
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			b.problems = append(b.problems, "console.error")
		}
	case *log.EventEntryAdded:
		// A 4xx the page asked for on purpose is logged by the network source; a CSP
		// violation, a blocked inline script or style, is a security entry.
		if e.Entry.Level == log.EntryLevelError && e.Entry.Source != log.EntrySourceNetwork {
			b.problems = append(b.problems, string(e.Entry.Source)+": "+e.Entry.Text)
		}
	case *fetch.EventRequestPaused:
		select {
		case b.paused <- e:
		default:
		}
	}
}

func remoteText(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}

// do runs steps with a bound, failing the test with what the page showed.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\npage text: %s", what, err, b.text())
	}
}

// eval runs JavaScript and decodes its value into out.
func (b *browser) eval(js string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](js, chromedp.EvalAwaitPromise, chromedp.EvalAsValue))
	require.NoError(b.t, err, js)
	if out != nil {
		require.NoError(b.t, json.Unmarshal(raw, out), "%s -> %s", js, raw)
	}
}

// text is the page's visible text (for failure messages).
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// stepTimeout bounds one browser step (an action, a script, a screenshot, injecting axe-core's
// 550 KB): seconds here alone, but over 30 s seen while the whole suite and six other
// engineers' suites ran on the machine's two cores.
const stepTimeout = 2 * time.Minute

// minWait is the least any wait allows: the conditions waited for are all things that must
// happen, so a generous bound costs a passing test nothing, and a machine running seven
// engineers' test suites at once (load 30 on two cores, seen here) is slow to paint.
const minWait = 30 * time.Second

// until waits for a JavaScript condition to be true (polling every 100 ms), for at least
// minWait.
func (b *browser) until(what, js string, within time.Duration) {
	b.t.Helper()
	within = max(within, minWait)
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		b.t.Fatalf("waiting for %s (%s): %v\npage text: %s", what, js, err, b.text())
	}
}

// see waits until the page's visible text contains s.
func (b *browser) see(s string, within time.Duration) {
	b.t.Helper()
	q, _ := json.Marshal(strings.ToLower(s))
	b.until(fmt.Sprintf("the page to show %q", s), fmt.Sprintf(`document.body.innerText.toLowerCase().includes(%s)`, q), within)
}

// open loads a hash route of the portal: a full load (a fresh query string, so never a
// same-document hash change), the page starting from scratch as after typing the URL.
func (b *browser) open(route string) {
	b.t.Helper()
	b.loads++
	b.do("open "+route, chromedp.Navigate(fmt.Sprintf("%s/?load=%d%s", b.base, b.loads, route)))
	b.until("the page to render", `document.querySelector("main h1") && !document.querySelector("main h1").textContent.startsWith("Loading the portal")`, 15*time.Second)
}

// route changes the hash route inside the running page (as a link does).
func (b *browser) route(hash string) {
	b.t.Helper()
	q, _ := json.Marshal(hash)
	b.eval(fmt.Sprintf(`location.hash = %s, true`, q), nil)
}

// resize sets the layout width.
func (b *browser) resize(width int64) {
	b.t.Helper()
	b.width = width
	b.do(fmt.Sprintf("resize to %d px", width), chromedp.EmulateViewport(width, 900))
}

// check screenshots the page as name at both widths (then restores the current one),
// asserts that nothing overflows the width (no sideways scrolling of the page), and runs
// axe-core: zero serious or critical violations.
func (b *browser) check(name string) {
	b.t.Helper()
	current := b.width
	for _, w := range widths {
		b.resize(w)
		b.checkAt(name)
	}
	b.resize(current)
}

func (b *browser) checkAt(name string) {
	b.t.Helper()
	// Let the layout settle after the resize before the picture and the scan.
	b.do("settle", chromedp.Sleep(150*time.Millisecond))
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(b.t, err)
	file := filepath.Join(b.shots, fmt.Sprintf("%s-%d.png", name, b.width))
	require.NoError(b.t, os.WriteFile(file, png, 0o644))

	var overflow struct {
		Scroll, Client int64
	}
	b.eval(`({Scroll: document.documentElement.scrollWidth, Client: document.documentElement.clientWidth})`, &overflow)
	require.LessOrEqual(b.t, overflow.Scroll, overflow.Client, "%s at %d px: the page scrolls sideways (%s)", name, b.width, file)

	var injected bool
	b.eval(`typeof axe !== "undefined"`, &injected)
	if !injected {
		ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
		defer cancel()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](b.axe))
		require.NoError(b.t, err, "inject axe-core")
	}
	var violations []struct {
		ID     string   `json:"id"`
		Impact string   `json:"impact"`
		Help   string   `json:"help"`
		Nodes  []string `json:"nodes"`
	}
	b.eval(`axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations
		.filter(v => v.impact === "serious" || v.impact === "critical")
		.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary)})))`, &violations)
	require.Empty(b.t, violations, "%s at %d px: axe-core found serious or critical violations (screenshot %s)", name, b.width, file)
}

// answered reports the statuses the browser received for URLs containing part.
func (b *browser) answered(part string) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int64
	for _, a := range b.statuses {
		if strings.Contains(a.url, part) {
			out = append(out, a.status)
		}
	}
	return out
}

// noProblems asserts the page threw nothing, logged no error and broke no CSP rule.
func (b *browser) noProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Empty(b.t, b.problems, "the page logged errors, exceptions or CSP violations")
}

// hold pauses the page's requests matching pattern (Fetch domain) until release, so the
// loading state stays on screen; fail answers them with an error instead.
func (b *browser) hold(pattern string) {
	b.t.Helper()
	_, err := chromedp.Call(b.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}})
	require.NoError(b.t, err)
}

// release lets every held request go on, or answers each with status and a problem body.
func (b *browser) release(status int64) {
	b.t.Helper()
	for {
		select {
		case ev := <-b.paused:
			var err error
			if status == 0 {
				_, err = chromedp.Call(b.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			} else {
				body := fmt.Sprintf(`{"type":"about:blank","title":"Service Unavailable","status":%d,"detail":"the database is unavailable; retry shortly","request_id":"held-by-test"}`, status)
				_, err = chromedp.Call(b.ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: status,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/problem+json"}}, Body: []byte(body)})
			}
			require.NoError(b.t, err)
		default:
			_, err := chromedp.Call(b.ctx, fetch.Disable, struct{}{})
			require.NoError(b.t, err)
			return
		}
	}
}

// waitHeld waits until the page has asked for a held request.
func (b *browser) waitHeld() *fetch.EventRequestPaused {
	b.t.Helper()
	select {
	case ev := <-b.paused:
		b.paused <- ev
		return ev
	case <-time.After(minWait):
		b.t.Fatalf("the page never asked for the held request\npage text: %s", b.text())
		return nil
	}
}

// key presses keys on whatever has focus (keyboard-only: no clicks).
func (b *browser) key(keys string, shift bool) {
	b.t.Helper()
	var opts []chromedp.KeyOption
	if shift {
		opts = append(opts, chromedp.KeyModifiers(chromedp.ModifierShift))
	}
	b.do("press "+fmt.Sprintf("%q", keys), chromedp.KeyEvent(keys, opts...))
}

// focused describes the focused element.
type focused struct {
	Tag, ID, Text, Href, Type string
	Outline                   string
	// After: the element comes after the one focused before (document order).
	After bool
}

const focusJS = `(() => {
	const el = document.activeElement;
	const prev = window.__lastFocus;
	window.__lastFocus = el;
	const after = !prev || !document.contains(prev) || prev === el || !!(prev.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING);
	const st = getComputedStyle(el);
	return {Tag: el.tagName.toLowerCase(), ID: el.id || "", Text: (el.innerText || el.value || el.getAttribute("aria-label") || "").trim().slice(0, 80),
		Href: el.getAttribute("href") || "", Type: el.getAttribute("type") || "",
		Outline: st.outlineStyle === "none" || st.outlineWidth === "0px" ? "" : st.outlineStyle + " " + st.outlineWidth, After: after};
})()`

// tabTo presses Tab until match(focused) holds, at most 40 times. Every stop must show a
// visible focus ring, and focus must move forward in document order (a logical order): Tab
// never jumps back up the page, except when it wraps around from the end.
func (b *browser) tabTo(what string, match func(focused) bool) focused {
	b.t.Helper()
	b.eval(`window.__lastFocus = document.activeElement, true`, nil)
	var trail []string
	for range 40 {
		b.key("\t", false)
		var f focused
		b.eval(focusJS, &f)
		if f.Tag == "body" {
			continue
		}
		trail = append(trail, f.Tag+"#"+f.ID+" "+f.Text)
		require.NotEmpty(b.t, f.Outline, "%s: focus on %s#%s (%q) is not visible at %d px", what, f.Tag, f.ID, f.Text, b.width)
		require.True(b.t, f.After || len(trail) > 20, "%s: Tab moved focus backwards to %s#%s (%q); order so far: %v", what, f.Tag, f.ID, f.Text, trail)
		if match(f) {
			return f
		}
	}
	b.t.Fatalf("%s: Tab never reached it; focus went through %v", what, trail)
	return focused{}
}

// received is what the HubSpot and Zendesk stand-ins received (GET /_dev/received).
type received struct {
	HubSpot []struct {
		ObjectType string            `json:"object_type"`
		ID         string            `json:"id"`
		Properties map[string]string `json:"properties"`
	} `json:"hubspot"`
	Zendesk []struct {
		ExternalID string `json:"external_id"`
		Subject    string `json:"subject"`
	} `json:"zendesk"`
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, url)
	require.NoError(t, json.NewDecoder(res.Body).Decode(out))
}

func (b bundle) received(t *testing.T) received {
	t.Helper()
	var r received
	getJSON(t, b.base+"/_dev/received", &r)
	return r
}

// companyUpdates counts the HubSpot company upserts for a tenant.
func (r received) companyUpdates(tenantID string) (n int, plans []string) {
	for _, u := range r.HubSpot {
		if u.ObjectType == "companies" && u.ID == tenantID {
			n++
			plans = append(plans, u.Properties["portal_plan"])
		}
	}
	return n, plans
}

// zendeskTickets counts the Zendesk tickets created for one of our tickets.
func (r received) zendeskTickets(ticketID string) int {
	n := 0
	for _, z := range r.Zendesk {
		if z.ExternalID == ticketID {
			n++
		}
	}
	return n
}

// eventually polls cond every 200 ms for up to within.
func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
