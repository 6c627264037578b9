package sam_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// These tests read template.yaml as CloudFormation does: the short-form intrinsics (!Ref,
// !If ...) in their long form, the Conditions evaluated for a set of parameter values, and the
// resources and outputs that deploy under them. So each deploy shape (no custom domain, a
// custom domain with and without DNS, the probe on, slower or off) is checked as it deploys.

// stack is template.yaml evaluated for one set of parameter values.
type stack struct {
	t      *testing.T
	tmpl   map[string]any
	params map[string]string
	conds  map[string]bool
}

// deploy evaluates template.yaml with the parameters' defaults overridden by set (a required
// parameter without a default gets a placeholder).
func deploy(t *testing.T, set map[string]string) *stack {
	t.Helper()
	b := setup(t)
	raw, err := os.ReadFile(filepath.Join(b.Root, "template.yaml"))
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	tmpl, ok := longForm(t, doc.Content[0]).(map[string]any)
	require.True(t, ok)
	s := &stack{t: t, tmpl: tmpl, params: map[string]string{}, conds: map[string]bool{}}
	for name, p := range section(tmpl, "Parameters") {
		v := "placeholder-" + strings.ToLower(name)
		if d, ok := p.(map[string]any)["Default"]; ok {
			v = fmt.Sprint(d)
		}
		s.params[name] = v
	}
	for name, v := range set {
		_, ok := s.params[name]
		require.True(t, ok, "template.yaml has no parameter %s", name)
		s.params[name] = v
	}
	return s
}

// longForm turns a YAML node into plain values, each short-form intrinsic into its long form.
func longForm(t *testing.T, n *yaml.Node) any {
	t.Helper()
	fn := map[string]string{"!If": "Fn::If", "!Not": "Fn::Not", "!Equals": "Fn::Equals", "!And": "Fn::And",
		"!Or": "Fn::Or", "!Join": "Fn::Join", "!Select": "Fn::Select", "!Split": "Fn::Split", "!Sub": "Fn::Sub",
		"!GetAtt": "Fn::GetAtt", "!Ref": "Ref", "!Condition": "Condition"}
	var v any
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = longForm(t, n.Content[i+1])
		}
		v = m
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			l = append(l, longForm(t, c))
		}
		v = l
	case yaml.AliasNode:
		return longForm(t, n.Alias)
	default:
		if _, tagged := fn[n.Tag]; tagged {
			v = n.Value
		} else {
			require.NoError(t, n.Decode(&v))
		}
	}
	if name, ok := fn[n.Tag]; ok {
		if s, isString := v.(string); isString && n.Tag == "!GetAtt" {
			v = strings.SplitN(s, ".", 2)
		}
		return map[string]any{name: v}
	}
	return v
}

func section(tmpl map[string]any, name string) map[string]any {
	m, _ := tmpl[name].(map[string]any)
	return m
}

// condition evaluates a named condition.
func (s *stack) condition(name string) bool {
	s.t.Helper()
	if v, ok := s.conds[name]; ok {
		return v
	}
	def, ok := section(s.tmpl, "Conditions")[name]
	require.True(s.t, ok, "unknown condition %s", name)
	v, ok := s.eval(def).(bool)
	require.True(s.t, ok, "condition %s is not a boolean", name)
	s.conds[name] = v
	return v
}

// eval resolves what a deploy resolves from parameters alone: Fn::If, conditions, Refs and
// Fn::Sub of parameters. Refs to resources and pseudo parameters stay as they are.
func (s *stack) eval(v any) any {
	s.t.Helper()
	switch v := v.(type) {
	case []any:
		out := []any{}
		for _, e := range v {
			if r := s.eval(e); !isNoValue(r) {
				out = append(out, r)
			}
		}
		return out
	case map[string]any:
		if len(v) == 1 {
			for k, arg := range v {
				if r, ok := s.intrinsic(k, arg); ok {
					return r
				}
			}
		}
		out := map[string]any{}
		for k, e := range v {
			if r := s.eval(e); !isNoValue(r) {
				out[k] = r
			}
		}
		return out
	default:
		return v
	}
}

func (s *stack) intrinsic(name string, arg any) (any, bool) {
	args, _ := arg.([]any)
	switch name {
	case "Ref":
		if p, ok := s.params[arg.(string)]; ok {
			return p, true
		}
		return map[string]any{"Ref": arg}, true
	case "Condition":
		return s.condition(arg.(string)), true
	case "Fn::If":
		require.Len(s.t, args, 3)
		if s.condition(args[0].(string)) {
			return s.eval(args[1]), true
		}
		return s.eval(args[2]), true
	case "Fn::Equals":
		require.Len(s.t, args, 2)
		return fmt.Sprint(s.eval(args[0])) == fmt.Sprint(s.eval(args[1])), true
	case "Fn::Not":
		require.Len(s.t, args, 1)
		return !s.eval(args[0]).(bool), true
	case "Fn::And", "Fn::Or":
		and := name == "Fn::And"
		for _, a := range args {
			if s.eval(a).(bool) != and {
				return !and, true
			}
		}
		return and, true
	case "Fn::Sub":
		str, ok := arg.(string)
		require.True(s.t, ok, "Fn::Sub with a variable map is not used here")
		out := regexp.MustCompile(`\$\{([A-Za-z0-9]+)\}`).ReplaceAllStringFunc(str, func(m string) string {
			if p, ok := s.params[m[2:len(m)-1]]; ok {
				return p
			}
			return m
		})
		if strings.Contains(out, "${") {
			return map[string]any{"Fn::Sub": out}, true
		}
		return out, true
	}
	return nil, false
}

func isNoValue(v any) bool {
	m, ok := v.(map[string]any)
	return ok && len(m) == 1 && m["Ref"] == "AWS::NoValue"
}

// active evaluates the entries of a section (Resources, Outputs) whose Condition holds.
func (s *stack) active(name string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, def := range section(s.tmpl, name) {
		m := def.(map[string]any)
		if c, ok := m["Condition"].(string); ok && !s.condition(c) {
			continue
		}
		out[id] = s.eval(m).(map[string]any)
	}
	return out
}

func (s *stack) resources() map[string]map[string]any { return s.active("Resources") }
func (s *stack) outputs() map[string]map[string]any   { return s.active("Outputs") }

// rulesHold evaluates the Rules section: every assertion of every rule whose RuleCondition holds.
func (s *stack) rulesHold() bool {
	for _, r := range section(s.tmpl, "Rules") {
		rule := r.(map[string]any)
		if c, ok := rule["RuleCondition"]; ok && !s.eval(c).(bool) {
			continue
		}
		for _, a := range rule["Assertions"].([]any) {
			if !s.eval(a.(map[string]any)["Assert"]).(bool) {
				return false
			}
		}
	}
	return true
}

// dig walks a resource's evaluated properties by keys (and list indexes).
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			require.True(t, ok, "no %q in %v", k, v)
			v, ok = m[k]
			require.True(t, ok, "no %q in %v", k, m)
		case int:
			l, ok := v.([]any)
			require.True(t, ok && k < len(l), "no [%d] in %v", k, v)
			v = l[k]
		}
	}
	return v
}

func ref(name string) map[string]any { return map[string]any{"Ref": name} }

// samGenerated are the resources SAM's transform adds that this template refers to.
var samGenerated = map[string]bool{"HttpApiApiGatewayDefaultStage": true}

// requireRefsResolve checks that everything deployed refers only to parameters, pseudo
// parameters and resources deployed in the same shape: a resource under a false condition
// referred to by one that deploys would fail the deploy.
func (s *stack) requireRefsResolve() {
	s.t.Helper()
	res := s.resources()
	var walk func(where string, v any)
	check := func(where, name string) {
		if _, ok := s.params[name]; ok || strings.HasPrefix(name, "AWS::") || samGenerated[name] {
			return
		}
		_, ok := res[name]
		require.True(s.t, ok, "%s refers to %s, which does not deploy with %v", where, name, s.params)
	}
	walk = func(where string, v any) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				walk(where, e)
			}
		case map[string]any:
			if r, ok := v["Ref"].(string); ok && len(v) == 1 {
				check(where, r)
			}
			if g, ok := v["Fn::GetAtt"].([]string); ok && len(v) == 1 {
				check(where, g[0])
			}
			if sub, ok := v["Fn::Sub"].(string); ok && len(v) == 1 {
				for _, m := range regexp.MustCompile(`\$\{([A-Za-z0-9:]+)(\.[A-Za-z]+)?\}`).FindAllStringSubmatch(sub, -1) {
					check(where, m[1])
				}
			}
			for _, e := range v {
				walk(where, e)
			}
		}
	}
	for id, r := range res {
		walk(id, r)
	}
	for id, o := range s.outputs() {
		walk("output "+id, o)
	}
}

// deployValid evaluates a shape that must deploy: its rules hold and its references resolve.
func deployValid(t *testing.T, set map[string]string) (*stack, map[string]map[string]any) {
	t.Helper()
	s := deploy(t, set)
	require.True(t, s.rulesHold(), "the rules refuse %v", set)
	s.requireRefsResolve()
	return s, s.resources()
}

var (
	customDomain = map[string]string{
		"ApiDomainName":     "api.portal.example.com",
		"ApiCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0d3c-example",
		"ApiHostedZoneId":   "Z0123456789EXAMPLE",
	}
	domainResources = []string{"ApiCustomDomain", "ApiCustomDomainMapping", "ApiCustomDomainRecord"}
	probeResources  = []string{"UptimeProbeArtifacts", "UptimeProbeRole", "UptimeCanary", "UptimeProbeAlarm"}
	executeAPI      = "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
)

// With the domain parameters empty (their defaults) the API is deployed exactly as before the
// custom domain existed: no domain resources, the HttpApi untouched, the outputs on API
// Gateway's own host.
func TestEmptyDomainParametersDeployTheAPIAsBefore(t *testing.T) {
	t.Parallel()
	s, res := deployValid(t, nil)
	for _, id := range domainResources {
		require.NotContains(t, res, id)
	}
	require.Equal(t, map[string]any{
		"StageName":            "$default",
		"DefaultRouteSettings": map[string]any{"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 100},
	}, res["HttpApi"]["Properties"])

	out := s.outputs()
	require.Equal(t, map[string]any{"Fn::Sub": executeAPI}, out["ApiUrl"]["Value"])
	require.Equal(t, map[string]any{"Fn::Sub": executeAPI + "/v1/webhooks/stripe"}, out["StripeWebhookUrl"]["Value"])
	require.NotContains(t, out, "ApiDomainTarget")
}

// With a domain and its certificate the API is served on the domain over TLS 1.2 or later,
// through the stage SAM creates; with a hosted zone the stack writes the alias record, without
// one it outputs the target for a CNAME. Stripe's URL and the probe move to the domain.
func TestCustomDomainServesTheAPIOverTLS12(t *testing.T) {
	t.Parallel()
	s, res := deployValid(t, customDomain)

	domain := res["ApiCustomDomain"]
	require.Equal(t, "AWS::ApiGatewayV2::DomainName", domain["Type"])
	require.Equal(t, "api.portal.example.com", dig(t, domain, "Properties", "DomainName"))
	require.Equal(t, map[string]any{
		"CertificateArn": customDomain["ApiCertificateArn"],
		"EndpointType":   "REGIONAL",
		"SecurityPolicy": "TLS_1_2",
	}, dig(t, domain, "Properties", "DomainNameConfigurations", 0))

	mapping := res["ApiCustomDomainMapping"]
	require.Equal(t, "AWS::ApiGatewayV2::ApiMapping", mapping["Type"])
	require.Equal(t, map[string]any{
		"DomainName": ref("ApiCustomDomain"),
		"ApiId":      ref("HttpApi"),
		"Stage":      ref("HttpApiApiGatewayDefaultStage"),
	}, mapping["Properties"])

	record := res["ApiCustomDomainRecord"]
	require.Equal(t, "AWS::Route53::RecordSet", record["Type"])
	require.Equal(t, customDomain["ApiHostedZoneId"], dig(t, record, "Properties", "HostedZoneId"))
	require.Equal(t, "api.portal.example.com", dig(t, record, "Properties", "Name"))
	require.Equal(t, "A", dig(t, record, "Properties", "Type"))
	require.Equal(t, map[string]any{"Fn::GetAtt": []string{"ApiCustomDomain", "RegionalDomainName"}},
		dig(t, record, "Properties", "AliasTarget", "DNSName"))
	require.Equal(t, map[string]any{"Fn::GetAtt": []string{"ApiCustomDomain", "RegionalHostedZoneId"}},
		dig(t, record, "Properties", "AliasTarget", "HostedZoneId"))

	out := s.outputs()
	require.Equal(t, "https://api.portal.example.com", out["ApiUrl"]["Value"])
	require.Equal(t, "https://api.portal.example.com/v1/webhooks/stripe", out["StripeWebhookUrl"]["Value"])
	require.Equal(t, "https://api.portal.example.com/v1/health",
		dig(t, res["UptimeCanary"], "Properties", "RunConfig", "EnvironmentVariables", "HEALTH_URL"),
		"the probe checks the domain customers use, its DNS and certificate included")

	t.Run("DNS elsewhere", func(t *testing.T) {
		t.Parallel()
		noZone := map[string]string{"ApiHostedZoneId": ""}
		for k, v := range customDomain {
			if k != "ApiHostedZoneId" {
				noZone[k] = v
			}
		}
		s, res := deployValid(t, noZone)
		require.Contains(t, res, "ApiCustomDomain")
		require.Contains(t, res, "ApiCustomDomainMapping")
		require.NotContains(t, res, "ApiCustomDomainRecord")
		require.Equal(t, map[string]any{"Fn::GetAtt": []string{"ApiCustomDomain", "RegionalDomainName"}},
			s.outputs()["ApiDomainTarget"]["Value"], "where to point the CNAME")
	})
}

// A half-set domain fails the deploy's rules instead of silently serving no domain.
func TestHalfSetDomainParametersAreRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  map[string]string
		ok   bool
	}{
		{name: "none", set: map[string]string{}, ok: true},
		{name: "domain and certificate", set: map[string]string{"ApiDomainName": "api.x.example", "ApiCertificateArn": "arn:c"}, ok: true},
		{name: "domain without certificate", set: map[string]string{"ApiDomainName": "api.x.example"}},
		{name: "certificate without domain", set: map[string]string{"ApiCertificateArn": "arn:c"}},
		{name: "hosted zone without domain", set: map[string]string{"ApiHostedZoneId": "Z1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.ok, deploy(t, tc.set).rulesHold())
		})
	}
}

// The probe is on by default: a canary GETs the /v1/health route portal-read serves, every
// minute, and an alarm emails AlertEmail's topic after two failed runs in a row (a run that
// does not happen counts as failed). It can run every five minutes, or be turned off.
func TestUptimeProbeWatchesTheHealthRouteAndPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	routes := map[string]string{}
	for _, r := range b.Template.Routes() {
		routes[r.Method+" "+r.Path] = r.Function
	}
	require.Equal(t, "PortalReadFunction", routes["GET /v1/health"], "the probed route is deployed")

	s, res := deployValid(t, nil)
	require.Equal(t, "on", s.params["UptimeProbe"], "on by default")
	for _, id := range probeResources {
		require.Contains(t, res, id)
	}
	canary := res["UptimeCanary"]
	require.Equal(t, "AWS::Synthetics::Canary", canary["Type"])
	require.Equal(t, "rate(1 minute)", dig(t, canary, "Properties", "Schedule", "Expression"))
	require.Equal(t, true, dig(t, canary, "Properties", "StartCanaryAfterCreation"))
	require.Equal(t, map[string]any{"Fn::Sub": executeAPI + "/v1/health"},
		dig(t, canary, "Properties", "RunConfig", "EnvironmentVariables", "HEALTH_URL"))
	require.Equal(t, map[string]any{"Fn::GetAtt": []string{"UptimeProbeRole", "Arn"}}, dig(t, canary, "Properties", "ExecutionRoleArn"))
	require.Equal(t, map[string]any{"Fn::Sub": "s3://${UptimeProbeArtifacts}/canary"}, dig(t, canary, "Properties", "ArtifactS3Location"))
	require.Equal(t, "Retain", res["UptimeProbeArtifacts"]["DeletionPolicy"],
		"a bucket holding artifacts must not fail turning the probe off or deleting the stack")
	script := dig(t, canary, "Properties", "Code", "Script").(string)
	require.Contains(t, script, "process.env.HEALTH_URL")
	require.Contains(t, script, "res.status !== 200 || status !== 'ok'")

	alarm := res["UptimeProbeAlarm"]
	require.Equal(t, map[string]any{
		"AlarmDescription":   dig(t, alarm, "Properties", "AlarmDescription"),
		"Namespace":          "CloudWatchSynthetics",
		"MetricName":         "SuccessPercent",
		"Dimensions":         []any{map[string]any{"Name": "CanaryName", "Value": ref("UptimeCanary")}},
		"Statistic":          "Average",
		"Period":             60,
		"EvaluationPeriods":  2,
		"DatapointsToAlarm":  2,
		"Threshold":          100,
		"ComparisonOperator": "LessThanThreshold",
		"TreatMissingData":   "breaching",
		"AlarmActions":       []any{ref("AlarmTopic")},
		"OKActions":          []any{ref("AlarmTopic")},
	}, alarm["Properties"])
	require.Equal(t, map[string]any{"TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": s.params["AlertEmail"]},
		res["AlarmEmailSubscription"]["Properties"], "the topic emails AlertEmail")
	require.Contains(t, s.outputs(), "UptimeCanaryName")

	t.Run("every five minutes", func(t *testing.T) {
		t.Parallel()
		res := deploy(t, map[string]string{"UptimeProbeMinutes": "5"}).resources()
		require.Equal(t, "rate(5 minutes)", dig(t, res["UptimeCanary"], "Properties", "Schedule", "Expression"))
		require.Equal(t, 300, dig(t, res["UptimeProbeAlarm"], "Properties", "Period"), "still two probes in a row")
	})

	t.Run("off", func(t *testing.T) {
		t.Parallel()
		s, res := deployValid(t, map[string]string{"UptimeProbe": "off"})
		for _, id := range probeResources {
			require.NotContains(t, res, id)
		}
		require.NotContains(t, s.outputs(), "UptimeCanaryName")
	})
}
