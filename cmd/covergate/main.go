// Command covergate is the coverage gate of `make test`: it reads the profile the suite's one
// `go test -coverpkg=... -coverprofile=...` run wrote, prints each gated package's statement
// coverage, and fails when one is below the minimum. The gated packages are the webhook
// handlers (shared/billing) and the permission checks (shared/auth, shared/tenant): the code
// whose untested lines cost money or leak data.
//
//	go run ./cmd/covergate -profile coverage.out -min 80 ./shared/billing ./shared/auth ./shared/tenant
//
// With -coverpkg every test binary reports the gated packages' blocks, so the same block comes
// several times in the profile; a statement counts as covered when any test binary ran it.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ErrBadProfile is a profile line that is not "file:start,end statements count".
var ErrBadProfile = errors.New("covergate: malformed coverage profile line")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Coverage is one package's statement coverage.
type Coverage struct {
	Package    string
	Statements int
	Covered    int
}

// Percent is the covered share of statements (0 when the package has none).
func (c Coverage) Percent() float64 {
	if c.Statements == 0 {
		return 0
	}
	return 100 * float64(c.Covered) / float64(c.Statements)
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("covergate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "coverage.out", "coverage profile of the test run")
	minimum := fs.Float64("min", 80, "minimum statement coverage, in percent")
	module := fs.String("module", "github.com/portal-functions/portal-functions", "module path the package folders are in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "covergate: name the packages to gate (./shared/billing ...)")
		return 2
	}
	f, err := os.Open(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "covergate: %v\n", err)
		return 2
	}
	defer f.Close()
	byPkg, err := Read(f)
	if err != nil {
		fmt.Fprintf(stderr, "covergate: %s: %v\n", *profile, err)
		return 2
	}
	code := 0
	for _, dir := range fs.Args() {
		pkg := path.Join(*module, strings.TrimPrefix(dir, "./"))
		c := byPkg[pkg]
		verdict := "ok"
		if c.Statements == 0 || c.Percent() < *minimum {
			verdict, code = fmt.Sprintf("FAIL (below %.0f%%)", *minimum), 1
		}
		fmt.Fprintf(stdout, "coverage %-16s %5.1f%% of %4d statements  %s\n", strings.TrimPrefix(dir, "./"), c.Percent(), c.Statements, verdict)
	}
	return code
}

// Read sums a coverage profile per package: each distinct block once, covered when any of its
// lines in the profile has a count above zero.
func Read(r io.Reader) (map[string]Coverage, error) {
	type block struct {
		stmts   int
		covered bool
	}
	blocks := map[string]block{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "mode:") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%w: %q", ErrBadProfile, line)
		}
		stmts, err1 := strconv.Atoi(fields[1])
		count, err2 := strconv.Atoi(fields[2])
		if err1 != nil || err2 != nil || !strings.Contains(fields[0], ":") {
			return nil, fmt.Errorf("%w: %q", ErrBadProfile, line)
		}
		b := blocks[fields[0]]
		b.stmts = stmts
		b.covered = b.covered || count > 0
		blocks[fields[0]] = b
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	keys := make([]string, 0, len(blocks))
	for k := range blocks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]Coverage{}
	for _, k := range keys {
		file := k[:strings.LastIndex(k, ":")]
		pkg := path.Dir(file)
		c := out[pkg]
		c.Package = pkg
		c.Statements += blocks[k].stmts
		if blocks[k].covered {
			c.Covered += blocks[k].stmts
		}
		out[pkg] = c
	}
	return out, nil
}
