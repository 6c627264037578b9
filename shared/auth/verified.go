package auth

import (
	"maps"
	"sync"
	"time"
)

// verifiedTTL bounds how long a verified HS256 token is answered from memory, and
// maxVerified how many are kept (about 1 KiB each): a portal page makes several reads with
// one token, and parsing it again (two base64 decodes, a JSON decode into claims, an HMAC) was
// a sixth of the Go server's CPU per read.
const (
	verifiedTTL = time.Minute
	maxVerified = 4096
)

// verifiedTokens remembers HS256 tokens that verified, by their exact text: a token that is
// byte for byte one that verified carries the same signature over the same claims, so only
// the clock can change the answer, and an entry is used only until the token's exp (plus the
// leeway the parser allowed) and never past verifiedTTL. Only HS256: the project's secret does
// not change while the process runs, while a JWKS key can be revoked, and a token signed by a
// revoked key must stop verifying as soon as the refreshed key set drops it.
type verifiedTokens struct {
	mu sync.Mutex
	m  map[string]verifiedToken
}

type verifiedToken struct {
	id    Identity
	until time.Time
}

// get answers a token that verified before, while its entry holds at now.
func (c *verifiedTokens) get(token string, now time.Time) (Identity, bool) {
	c.mu.Lock()
	e, ok := c.m[token]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		return Identity{}, false
	}
	id := e.id
	// The caller gets its own map: the entry's stays as it was verified.
	id.AppMetadata = maps.Clone(id.AppMetadata)
	return id, true
}

// put remembers a token that verified now, until until. When full, it starts over: simpler
// than an eviction order, and a miss costs only a verification.
func (c *verifiedTokens) put(token string, id Identity, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxVerified {
		c.m = make(map[string]verifiedToken)
	}
	id.AppMetadata = maps.Clone(id.AppMetadata)
	c.m[token] = verifiedToken{id: id, until: until}
}
