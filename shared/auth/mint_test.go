package auth_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
)

func TestMintHS256MintsTokensTheVerifierAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	claims := auth.TokenClaims{
		Subject:     b.user.String(),
		Email:       "dev@example.com",
		Role:        auth.RoleAuthenticated,
		AAL:         "aal1",
		SessionID:   "dev-session",
		AppMetadata: map[string]any{"provider": "email"},
		Issuer:      auth.IssuerFor(b.iss.URL()),
		Audience:    []string{auth.AudienceAuthenticated},
		IssuedAt:    now,
		NotBefore:   now,
		ExpiresAt:   now.Add(time.Hour),
		Extra:       map[string]any{"user_metadata": map[string]any{"name": "Dev"}},
	}

	tok, err := auth.MintHS256(b.iss.Secret(), claims)
	require.NoError(t, err)
	id, err := b.v.Verify(t.Context(), tok)

	require.NoError(t, err)
	require.Equal(t, auth.Identity{
		UserID: b.user, Email: "dev@example.com", Role: auth.RoleAuthenticated, AAL: "aal1",
		SessionID: "dev-session", AppMetadata: map[string]any{"provider": "email"}, Claims: id.Claims,
	}, id)
	require.JSONEq(t, `{"sub":"`+b.user.String()+`","email":"dev@example.com","role":"authenticated",
		"aal":"aal1","session_id":"dev-session","is_anonymous":false,"app_metadata":{"provider":"email"},
		"iss":"`+auth.IssuerFor(b.iss.URL())+`","aud":"authenticated","iat":`+itoa(now.Unix())+`,
		"nbf":`+itoa(now.Unix())+`,"exp":`+itoa(now.Add(time.Hour).Unix())+`,"user_metadata":{"name":"Dev"}}`,
		string(id.Claims))
}

func TestMintHS256WritesSeveralAudiencesAsAnArray(t *testing.T) {
	t.Parallel()

	m := auth.TokenClaims{Audience: []string{"a", "b"}}.Map()

	require.Equal(t, []string{"a", "b"}, m["aud"])
	require.Equal(t, map[string]any{"aud": []string{"a", "b"}, "is_anonymous": false}, m)
}

func TestMintHS256RefusesAnEmptySecret(t *testing.T) {
	t.Parallel()

	_, err := auth.MintHS256(nil, auth.TokenClaims{Subject: "x"})

	require.ErrorContains(t, err, "empty secret")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
