package billing

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v76/webhook"
)

// stripeVerdict is what Verify answered when it ran stripe-go's ValidatePayloadWithTolerance
// once per secret (only "no valid signature" moving on to the next) and then read the
// header's last t= for the future check: the reference the signature check keeps to.
func stripeVerdict(payload []byte, header string, secrets []string, tolerance time.Duration, now time.Time) error {
	if strings.TrimSpace(header) == "" {
		return ErrMissingSignature
	}
	checked := ErrInvalidSignature
	for _, secret := range secrets {
		err := webhook.ValidatePayloadWithTolerance(payload, header, secret, tolerance)
		switch {
		case err == nil:
			checked = nil
		case errors.Is(err, webhook.ErrNoValidSignature):
			continue
		case errors.Is(err, webhook.ErrTooOld):
			return ErrStaleTimestamp
		case errors.Is(err, webhook.ErrNotSigned):
			return ErrMissingSignature
		default:
			return ErrMalformedSignature
		}
		break
	}
	if checked != nil {
		return checked
	}
	var ts time.Time
	found := false
	for _, pair := range strings.Split(header, ",") {
		k, val, ok := strings.Cut(pair, "=")
		if !ok {
			return ErrMalformedSignature
		}
		if k == "t" {
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return ErrMalformedSignature
			}
			ts, found = time.Unix(n, 0), true
		}
	}
	if !found {
		return ErrMalformedSignature
	}
	if ts.Sub(now) > tolerance {
		return ErrFutureTimestamp
	}
	return nil
}

// The signature check refuses and accepts exactly what stripe-go's check did, with the same
// reason, for well-formed, rotated, stale, future, repeated and malformed headers.
func TestSignatureCheckAgreesWithStripeGo(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"id":"evt_1","object":"event","api_version":"2023-10-16","created":1700000000,"type":"ping","data":{"object":{"id":"x","object":"thing"}}}`)
	now := time.Now()
	secrets := []string{"whsec_new", "whsec_old"}
	sig := func(secret string, at time.Time) string {
		return fmt.Sprintf("%x", webhook.ComputeSignature(at, payload, secret))
	}
	ts := func(at time.Time) string { return strconv.FormatInt(at.Unix(), 10) }
	stale, ahead := now.Add(-10*time.Minute), now.Add(10*time.Minute)
	headers := map[string]string{
		"valid":                        "t=" + ts(now) + ",v1=" + sig("whsec_new", now),
		"valid with v0 and a bad v1":   "t=" + ts(now) + ",v1=" + sig("whsec_x", now) + ",v0=abc,v1=" + sig("whsec_new", now),
		"three v1, the third signed":   "t=" + ts(now) + ",v1=" + sig("whsec_x", now) + ",v1=" + sig("whsec_y", now) + ",v1=" + sig("whsec_old", now),
		"the old secret of a rotation": "t=" + ts(now) + ",v1=" + sig("whsec_old", now),
		"upper-case hex":               "t=" + ts(now) + ",v1=" + strings.ToUpper(sig("whsec_new", now)),
		"a sign before the time":       "t=+" + ts(now) + ",v1=" + sig("whsec_new", now),
		"another secret":               "t=" + ts(now) + ",v1=" + sig("whsec_other", now),
		"stale":                        "t=" + ts(stale) + ",v1=" + sig("whsec_new", stale),
		"stale, another secret":        "t=" + ts(stale) + ",v1=" + sig("whsec_other", stale),
		"future":                       "t=" + ts(ahead) + ",v1=" + sig("whsec_new", ahead),
		"two times, the last signed":   "t=" + ts(stale) + ",t=" + ts(now) + ",v1=" + sig("whsec_new", now),
		"two times, the first signed":  "t=" + ts(now) + ",t=" + ts(stale) + ",v1=" + sig("whsec_new", now),
		"no time":                      "v1=" + sig("whsec_new", now),
		"no v1":                        "t=" + ts(now) + ",v0=" + sig("whsec_new", now),
		"an empty v1":                  "t=" + ts(now) + ",v1=",
		"an empty v1, stale":           "t=" + ts(stale) + ",v1=",
		"odd hex":                      "t=" + ts(now) + ",v1=abc",
		"not hex":                      "t=" + ts(now) + ",v1=" + strings.Repeat("zz", 32),
		"short hex, stale":             "t=" + ts(stale) + ",v1=abcd",
		"a space after the comma":      "t=" + ts(now) + ", v1=" + sig("whsec_new", now),
		"a pair without a value":       "t=" + ts(now) + ",v1",
		"an empty pair":                "t=" + ts(now) + ",,v1=" + sig("whsec_new", now),
		"a value with an equals sign":  "t=" + ts(now) + ",v1=" + sig("whsec_new", now) + "=",
		"a time that is not a number":  "t=now,v1=" + sig("whsec_new", now),
		"garbage":                      "garbage",
		"only a comma":                 ",",
		"blank":                        "   ",
	}
	v, err := NewVerifier(VerifierOptions{Secrets: secrets})
	require.NoError(t, err)
	for name, header := range headers {
		want := stripeVerdict(payload, header, secrets, DefaultTolerance, now)
		_, got := v.Verify(payload, header)
		if want == nil {
			require.NoError(t, got, name)
			continue
		}
		var de *DeliveryError
		require.ErrorAs(t, got, &de, name)
		require.ErrorIs(t, de.Reason, want, "%s: %s", name, header)
	}
}

// A delivery's signature check allocates nothing: its header is read in place and its HMAC
// state is keyed once per secret, not once per delivery.
func TestSignatureCheckAllocatesNothing(t *testing.T) {
	payload := []byte(`{"id":"evt_1"}`)
	v, err := NewVerifier(VerifierOptions{Secrets: []string{"whsec_new", "whsec_old"}})
	require.NoError(t, err)
	header := SignedTestEvent("whsec_old", payload, time.Now())
	allocs := testing.AllocsPerRun(100, func() {
		var sh signatureHeader
		err := sh.parse(header)
		if err == nil {
			err = v.checkSignature(payload, &sh)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
