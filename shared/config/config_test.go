package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
)

type settings struct {
	DatabaseURL config.Secret `env:"DATABASE_URL" required:"true"`
	Webhook     config.Secret `env:"STRIPE_WEBHOOK_SECRET" required:"true"`
	Timeout     time.Duration `env:"TIMEOUT" default:"10s"`
	Base        *url.URL      `env:"SUPABASE_URL" required:"true"`
	Debug       bool          `env:"DEBUG"`
	Prices      []string      `env:"PRICES"`
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadNamesEveryMissingAndMalformedVariableWithoutValues(t *testing.T) {
	t.Parallel()
	var s settings
	err := config.LoadFrom(lookup(map[string]string{
		"DATABASE_URL": "postgres://u:hunter2@db/x",
		"TIMEOUT":      "soon-ish-hunter3",
		"SUPABASE_URL": "not a url",
	}), &s)
	require.Error(t, err)
	var cfgErr *config.Error
	require.ErrorAs(t, err, &cfgErr)
	require.Equal(t, []string{"STRIPE_WEBHOOK_SECRET"}, cfgErr.Missing)
	require.Len(t, cfgErr.Malformed, 2)
	require.Contains(t, err.Error(), "STRIPE_WEBHOOK_SECRET")
	require.Contains(t, err.Error(), "TIMEOUT")
	require.Contains(t, err.Error(), "SUPABASE_URL")
	require.NotContains(t, err.Error(), "hunter")
}

func TestLoadFillsDefaultsAndTypes(t *testing.T) {
	t.Parallel()
	var s settings
	require.NoError(t, config.LoadFrom(lookup(map[string]string{
		"DATABASE_URL":          "postgres://x",
		"STRIPE_WEBHOOK_SECRET": "whsec_abc",
		"SUPABASE_URL":          "http://127.0.0.1:54321",
		"DEBUG":                 "true",
		"PRICES":                "price_a, price_b,",
	}), &s))
	require.Equal(t, 10*time.Second, s.Timeout)
	require.True(t, s.Debug)
	require.Equal(t, []string{"price_a", "price_b"}, s.Prices)
	require.Equal(t, "whsec_abc", s.Webhook.Reveal())
}

func TestSecretIsRedactedEverywhere(t *testing.T) {
	t.Parallel()
	s := config.Secret("sk_live_topsecret")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("loaded", "key", s, "cfg", struct{ K config.Secret }{s})
	js, _ := json.Marshal(map[string]any{"k": s})
	for name, out := range map[string]string{
		"%s": fmt.Sprintf("%s", s), "%v": fmt.Sprintf("%v", s), "%q": fmt.Sprintf("%q", s),
		"%#v": fmt.Sprintf("%#v", s), "%+v struct": fmt.Sprintf("%+v", struct{ K config.Secret }{s}),
		"slog": buf.String(), "json": string(js),
	} {
		require.NotContains(t, out, "topsecret", name)
		require.Contains(t, out, config.Redacted, name)
	}
}
