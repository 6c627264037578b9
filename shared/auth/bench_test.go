package auth_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
)

func benchmarkVerify(b *testing.B, alg string) {
	iss := authtest.New(b)
	v := iss.Verifier(b)
	tok := iss.Token(b, uuid.New(), authtest.WithAlg(alg))
	if _, err := v.Verify(b.Context(), tok); err != nil { // warm: keys cached
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(b.Context(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) { benchmarkVerify(b, auth.HS256) }

// BenchmarkVerifyES256 verifies against a warm JWKS cache: no fetch per token.
func BenchmarkVerifyES256(b *testing.B) { benchmarkVerify(b, auth.ES256) }

func BenchmarkVerifyRS256(b *testing.B) { benchmarkVerify(b, auth.RS256) }
