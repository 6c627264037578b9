// Package sam reads the repository's SAM template (template.yaml), its Makefile build targets and
// env.json, so the dev server, the invoke tool and the tests take functions, routes and
// environment from the files SAM deploys rather than from a second list that could drift.
//
// It understands the part of the template this project uses: AWS::Serverless::Function
// resources with their Globals, HttpApi and Schedule events, and environment variables whose
// values are literals or CloudFormation intrinsics (!Ref, !Sub ...), kept as written.
package sam

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Errors a caller can tell apart.
var (
	// ErrNoFunctions is a template without a single AWS::Serverless::Function.
	ErrNoFunctions = errors.New("sam: template has no AWS::Serverless::Function")
	// ErrUnknownFunction is a logical id the template does not define.
	ErrUnknownFunction = errors.New("sam: unknown function")
	// ErrBadRoute is an HttpApi event without a method or a path.
	ErrBadRoute = errors.New("sam: HttpApi event needs Method and Path")
)

// Template is what the project needs from template.yaml.
type Template struct {
	// Functions, sorted by logical id.
	Functions []Function
	// Parameters by name.
	Parameters map[string]Parameter
	// Alarms are the AWS::CloudWatch::Alarm resources on one metric, sorted by logical id.
	Alarms []Alarm
}

// Alarm is a CloudWatch alarm on one metric: tests check that the code emits the metric with
// exactly the dimensions the alarm reads (CloudWatch matches a dimension set exactly).
type Alarm struct {
	LogicalID          string
	Namespace          string
	MetricName         string
	Dimensions         map[string]Value
	Statistic          string
	Period             int
	EvaluationPeriods  int
	Threshold          float64
	ComparisonOperator string
	TreatMissingData   string
}

// Parameter is a template parameter (a setting or a secret asked for at deploy time).
type Parameter struct {
	Name    string
	NoEcho  bool
	Default *string
}

// Function is one AWS::Serverless::Function with Globals applied.
type Function struct {
	LogicalID     string
	CodeURI       string
	Handler       string
	Runtime       string
	Architectures []string
	BuildMethod   string
	Timeout       int
	MemorySize    int
	// ReservedConcurrency is ReservedConcurrentExecutions (0: unreserved).
	ReservedConcurrency int
	// Env maps each environment variable the function gets to its value as written.
	Env map[string]Value
	// Routes are its HttpApi events; Schedules its Schedule expressions.
	Routes    []Route
	Schedules []string
}

// Value is an environment value as written: a literal (Tag "") or an intrinsic such as
// !Ref (Tag "!Ref", Value the parameter's name).
type Value struct {
	Tag   string
	Value string
}

// Route is one HttpApi event: a method and an API Gateway path (`/v1/tickets/{id}`).
type Route struct {
	Event  string
	Method string
	Path   string
}

// Pattern is the route as a net/http ServeMux pattern ("GET /v1/tickets/{id}"). API Gateway's
// `{name}` segments are ServeMux wildcards already; a greedy `{name+}` becomes `{name...}`.
func (r Route) Pattern() string {
	p := strings.ReplaceAll(r.Path, "+}", "...}")
	if strings.EqualFold(r.Method, "ANY") {
		return p
	}
	return strings.ToUpper(r.Method) + " " + p
}

// IsHTTP reports whether the function is served through the HTTP API.
func (f Function) IsHTTP() bool { return len(f.Routes) > 0 }

// EnvNames lists the function's variable names, sorted.
func (f Function) EnvNames() []string {
	names := make([]string, 0, len(f.Env))
	for k := range f.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Folder is the function's folder by the project's naming rule: the logical id without its
// "Function" suffix, in kebab case (PaymentWebhookFunction → functions/payment-webhook).
func (f Function) Folder() string {
	name := strings.TrimSuffix(f.LogicalID, "Function")
	var b strings.Builder
	for i, r := range name {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return "functions/" + b.String()
}

// Function returns the function with the given logical id.
func (t *Template) Function(logicalID string) (Function, error) {
	for _, f := range t.Functions {
		if f.LogicalID == logicalID {
			return f, nil
		}
	}
	return Function{}, fmt.Errorf("%w %q", ErrUnknownFunction, logicalID)
}

// SecretEnv maps each of f's environment variables that takes a NoEcho parameter (a secret)
// to that parameter's name, so a test can give every secret a distinctive value and look for
// it wherever it must never appear.
func (t *Template) SecretEnv(f Function) map[string]string {
	out := map[string]string{}
	for name, v := range f.Env {
		if p, ok := t.Parameters[v.Value]; ok && v.Tag == "!Ref" && p.NoEcho {
			out[name] = p.Name
		}
	}
	return out
}

// Routes lists every HTTP route with the function that serves it, in template order of
// functions (sorted by logical id) and events.
func (t *Template) Routes() []FunctionRoute {
	var out []FunctionRoute
	for _, f := range t.Functions {
		for _, r := range f.Routes {
			out = append(out, FunctionRoute{Function: f.LogicalID, Route: r})
		}
	}
	return out
}

// FunctionRoute is a route and the logical id of the function that serves it.
type FunctionRoute struct {
	Function string
	Route
}

// Load reads a template file.
func Load(path string) (*Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	return Parse(b)
}

type rawTemplate struct {
	Globals struct {
		Function rawProps `yaml:"Function"`
	} `yaml:"Globals"`
	Parameters map[string]struct {
		NoEcho  bool    `yaml:"NoEcho"`
		Default *string `yaml:"Default"`
	} `yaml:"Parameters"`
	Resources map[string]struct {
		Type     string `yaml:"Type"`
		Metadata struct {
			BuildMethod string `yaml:"BuildMethod"`
		} `yaml:"Metadata"`
		Properties rawProps `yaml:"Properties"`
	} `yaml:"Resources"`
}

type rawProps struct {
	CodeURI       string   `yaml:"CodeUri"`
	Handler       string   `yaml:"Handler"`
	Runtime       string   `yaml:"Runtime"`
	Architectures []string `yaml:"Architectures"`
	Timeout       int      `yaml:"Timeout"`
	MemorySize    int      `yaml:"MemorySize"`
	Reserved      int      `yaml:"ReservedConcurrentExecutions"`
	Environment   struct {
		Variables map[string]yaml.Node `yaml:"Variables"`
	} `yaml:"Environment"`
	Events map[string]struct {
		Type       string `yaml:"Type"`
		Properties struct {
			Method   string `yaml:"Method"`
			Path     string `yaml:"Path"`
			Schedule string `yaml:"Schedule"`
		} `yaml:"Properties"`
	} `yaml:"Events"`
}

// Parse reads a template from its YAML text.
func Parse(b []byte) (*Template, error) {
	var raw rawTemplate
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	t := &Template{Parameters: map[string]Parameter{}}
	for name, p := range raw.Parameters {
		t.Parameters[name] = Parameter{Name: name, NoEcho: p.NoEcho, Default: p.Default}
	}
	g := raw.Globals.Function
	for id, res := range raw.Resources {
		if res.Type != "AWS::Serverless::Function" {
			continue
		}
		p := res.Properties
		f := Function{
			LogicalID:     id,
			CodeURI:       p.CodeURI,
			Handler:       first(p.Handler, g.Handler),
			Runtime:       first(p.Runtime, g.Runtime),
			Architectures: p.Architectures,
			BuildMethod:   res.Metadata.BuildMethod,
			Timeout:       p.Timeout,
			MemorySize:    p.MemorySize,
			Env:           map[string]Value{},
		}
		f.ReservedConcurrency = cmp.Or(p.Reserved, g.Reserved)
		if len(f.Architectures) == 0 {
			f.Architectures = g.Architectures
		}
		if f.Timeout == 0 {
			f.Timeout = g.Timeout
		}
		if f.MemorySize == 0 {
			f.MemorySize = g.MemorySize
		}
		// Function variables override Globals', as SAM merges them.
		for _, vars := range []map[string]yaml.Node{g.Environment.Variables, p.Environment.Variables} {
			for k, n := range vars {
				f.Env[k] = valueOf(n)
			}
		}
		events := make([]string, 0, len(p.Events))
		for name := range p.Events {
			events = append(events, name)
		}
		sort.Strings(events)
		for _, name := range events {
			ev := p.Events[name]
			switch ev.Type {
			case "HttpApi":
				if ev.Properties.Method == "" || ev.Properties.Path == "" {
					return nil, fmt.Errorf("%w: %s event %s", ErrBadRoute, id, name)
				}
				f.Routes = append(f.Routes, Route{Event: name, Method: strings.ToUpper(ev.Properties.Method), Path: ev.Properties.Path})
			case "Schedule", "ScheduleV2":
				f.Schedules = append(f.Schedules, ev.Properties.Schedule)
			}
		}
		t.Functions = append(t.Functions, f)
	}
	if len(t.Functions) == 0 {
		return nil, ErrNoFunctions
	}
	var alarms struct {
		Resources map[string]struct {
			Type       string `yaml:"Type"`
			Properties struct {
				Namespace  string `yaml:"Namespace"`
				MetricName string `yaml:"MetricName"`
				Dimensions []struct {
					Name  string    `yaml:"Name"`
					Value yaml.Node `yaml:"Value"`
				} `yaml:"Dimensions"`
				Statistic          string    `yaml:"Statistic"`
				Period             yaml.Node `yaml:"Period"`
				EvaluationPeriods  yaml.Node `yaml:"EvaluationPeriods"`
				Threshold          yaml.Node `yaml:"Threshold"`
				ComparisonOperator string    `yaml:"ComparisonOperator"`
				TreatMissingData   string    `yaml:"TreatMissingData"`
			} `yaml:"Properties"`
		} `yaml:"Resources"`
	}
	if err := yaml.Unmarshal(b, &alarms); err != nil {
		return nil, fmt.Errorf("parse template alarms: %w", err)
	}
	for id, res := range alarms.Resources {
		if res.Type != "AWS::CloudWatch::Alarm" {
			continue
		}
		p := res.Properties
		a := Alarm{LogicalID: id, Namespace: p.Namespace, MetricName: p.MetricName, Dimensions: map[string]Value{},
			Statistic: p.Statistic, Period: int(number(p.Period)), EvaluationPeriods: int(number(p.EvaluationPeriods)),
			Threshold: number(p.Threshold), ComparisonOperator: p.ComparisonOperator, TreatMissingData: p.TreatMissingData}
		for _, d := range p.Dimensions {
			a.Dimensions[d.Name] = valueOf(d.Value)
		}
		t.Alarms = append(t.Alarms, a)
	}
	sort.Slice(t.Alarms, func(i, j int) bool { return t.Alarms[i].LogicalID < t.Alarms[j].LogicalID })
	sort.Slice(t.Functions, func(i, j int) bool { return t.Functions[i].LogicalID < t.Functions[j].LogicalID })
	return t, nil
}

// number is a literal number of the template; an intrinsic (!If [...]) reads as 0.
func number(n yaml.Node) float64 {
	v := valueOf(n)
	if v.Tag != "" {
		return 0
	}
	f, _ := strconv.ParseFloat(v.Value, 64)
	return f
}

func valueOf(n yaml.Node) Value {
	if n.Kind == yaml.ScalarNode && (n.Tag == "" || strings.HasPrefix(n.Tag, "!!")) {
		return Value{Value: n.Value}
	}
	if n.Kind == yaml.ScalarNode {
		return Value{Tag: n.Tag, Value: n.Value}
	}
	// A long-form intrinsic ({"Ref": X}) or a sequence form: keep the tag or key.
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 {
		key := n.Content[0].Value
		tag := "!" + strings.TrimPrefix(key, "Fn::")
		return Value{Tag: tag, Value: n.Content[1].Value}
	}
	return Value{Tag: n.Tag}
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// buildTarget matches `build-<LogicalId>:` and the recipe's package path.
var (
	buildTarget = regexp.MustCompile(`^build-([A-Za-z0-9]+):`)
	recipePkg   = regexp.MustCompile(`-o\s+\$\(ARTIFACTS_DIR\)/bootstrap\s+(\./\S+)`)
)

// BuildTarget is one `build-<LogicalId>` Makefile target and the package its recipe builds.
type BuildTarget struct {
	LogicalID string
	// Package is the Go package path the recipe builds (./functions/x); "" when the recipe does
	// not write $(ARTIFACTS_DIR)/bootstrap.
	Package string
	// Recipe is the target's command lines.
	Recipe []string
}

// ReadBuildTargets reads the build-<LogicalId> targets of a Makefile.
func ReadBuildTargets(r io.Reader) (map[string]BuildTarget, error) {
	out := map[string]BuildTarget{}
	var cur *BuildTarget
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := buildTarget.FindStringSubmatch(line); m != nil {
			if cur != nil {
				out[cur.LogicalID] = *cur
			}
			cur = &BuildTarget{LogicalID: m[1]}
			continue
		}
		if cur == nil {
			continue
		}
		if !strings.HasPrefix(line, "\t") {
			out[cur.LogicalID] = *cur
			cur = nil
			continue
		}
		cur.Recipe = append(cur.Recipe, strings.TrimSpace(line))
		if m := recipePkg.FindStringSubmatch(line); m != nil {
			cur.Package = m[1]
		}
	}
	if cur != nil {
		out[cur.LogicalID] = *cur
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read Makefile: %w", err)
	}
	return out, nil
}

// LoadBuildTargets reads the build targets of the Makefile at path.
func LoadBuildTargets(path string) (map[string]BuildTarget, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Makefile: %w", err)
	}
	return ReadBuildTargets(bytes.NewReader(b))
}

// EnvFile is env.json in `sam local --env-vars` format: variables per logical id, and an
// optional "Parameters" entry that applies to every function.
type EnvFile map[string]map[string]string

// LoadEnvFile reads an env.json.
func LoadEnvFile(path string) (EnvFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	var env EnvFile
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("parse env file %s: %w", filepath.Base(path), err)
	}
	return env, nil
}

// For returns the variables the function gets locally, as `sam local` computes them: the
// variables the template declares for it, with values from the "Parameters" entry, then
// from the function's own entry. A variable the template does not declare is not passed (SAM
// ignores it too); a declared one with no local value is left out, so the function reports it
// missing.
func (e EnvFile) For(f Function) map[string]string {
	out := map[string]string{}
	for name := range f.Env {
		if v, ok := e["Parameters"][name]; ok {
			out[name] = v
		}
		if v, ok := e[f.LogicalID][name]; ok {
			out[name] = v
		}
	}
	return out
}

// Root finds the repository root (the folder holding template.yaml) from dir upwards, so
// tools and tests work from any subfolder.
func Root(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "template.yaml")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("find repository root: no template.yaml above %s", dir)
		}
		d = parent
	}
}

// Project is the repository as the tools and tests read it: its root folder, template.yaml,
// the Makefile's build targets and env.json.
type Project struct {
	Root     string
	Template *Template
	Targets  map[string]BuildTarget
	Env      EnvFile
}

// Open finds the repository root from dir upwards (Root) and reads the project's template,
// build targets and env.json.
func Open(dir string) (*Project, error) {
	root, err := Root(dir)
	if err != nil {
		return nil, err
	}
	p := &Project{Root: root}
	if p.Template, err = Load(filepath.Join(root, "template.yaml")); err != nil {
		return nil, err
	}
	if p.Targets, err = LoadBuildTargets(filepath.Join(root, "Makefile")); err != nil {
		return nil, err
	}
	if p.Env, err = LoadEnvFile(filepath.Join(root, "env.json")); err != nil {
		return nil, err
	}
	return p, nil
}
