// Package tokens gets OAuth 2.0 access tokens for upstream logins: from
// Microsoft 365 confidential apps (MSAL), Google service accounts, any OAuth
// 2.0 token endpoint, and keeps rotating refresh tokens in an encrypted store.
//
// It knows nothing of mail protocols. It must never log or return a token or
// secret in an error.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Source gives a currently valid access token for one credential. It is
// safe for concurrent use.
type Source interface {
	Token(ctx context.Context) (*oauth2.Token, error)
}

// Fetcher asks the provider for a new token every time it is called.
type Fetcher interface {
	Fetch(ctx context.Context) (*oauth2.Token, error)
}

// FetcherFunc adapts a function to Fetcher.
type FetcherFunc func(ctx context.Context) (*oauth2.Token, error)

// Fetch calls f.
func (f FetcherFunc) Fetch(ctx context.Context) (*oauth2.Token, error) { return f(ctx) }

// Error is a failed token request for a profile. NeedsSignIn is set when
// retrying cannot help (a revoked grant, a wrong secret): a person must act.
type Error struct {
	Profile     string
	Err         error
	NeedsSignIn bool
	// Fix is what a person should do when NeedsSignIn is set.
	Fix string
}

func (e *Error) Error() string {
	hint := "retrying"
	if e.NeedsSignIn {
		hint = e.Fix
		if hint == "" {
			hint = "fix the credential (see mailproxy check " + e.Profile + ")"
		}
	}
	return fmt.Sprintf("profile %q: token: %v (%s)", e.Profile, e.Err, hint)
}

func (e *Error) Unwrap() error { return e.Err }

// permanentCodes are OAuth error codes that no retry will fix.
var permanentCodes = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"invalid_scope": true, "interaction_required": true, "consent_required": true,
	"access_denied": true, "unsupported_grant_type": true,
}

// needsSignIn classifies a fetch error.
func needsSignIn(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return permanentCodes[re.ErrorCode]
	}
	var pe interface{ OAuthErrorCode() string }
	if errors.As(err, &pe) {
		return permanentCodes[pe.OAuthErrorCode()]
	}
	return false
}

// State is what an operator may see about a cached token: never the token.
type State struct {
	ValidUntil  time.Time
	LastRefresh time.Time
	LastError   string
	NeedsSignIn bool
	Refreshes   int64
	Failures    int64
}

// CacheOptions tune a Cache; the zero value is usable.
type CacheOptions struct {
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// FetchTimeout bounds one token request (default 30 s).
	FetchTimeout time.Duration
	// MaxBackoff caps the wait between failed background refreshes (default 5 min).
	MaxBackoff time.Duration
	// Fix tells a person what to do when the credential needs them, e.g.
	// "run mailproxy token add crm" (default: fix the credential).
	Fix string
	// OnNeedsSignIn is called once each time the credential starts needing
	// a person (a refused or revoked grant), not on every failed request.
	OnNeedsSignIn func(*Error)
	// HoldSignIn is how long a failure that needs a person is answered
	// from memory rather than asking the provider again (default 10 s),
	// so a revoked grant does not turn every app login into a token
	// request. Generation, when set, ends the hold early when it changes
	// (Store.Generation: someone signed in).
	HoldSignIn time.Duration
	Generation func() uint64
}

// Cache is a Source that keeps the current token in memory, makes
// concurrent callers share one request, and (with Run) refreshes the token
// in the background before it expires.
type Cache struct {
	profile string
	fetcher Fetcher
	opts    CacheOptions
	group   singleflight.Group
	kick    chan struct{}

	mu    sync.Mutex
	tok   *oauth2.Token
	state State
	// held is the last failure that needs a person, answered until
	// heldUntil unless the generation moves on from heldGen.
	held      *Error
	heldUntil time.Time
	heldGen   uint64
}

// expirySkew: a token this close to expiry is not handed out.
const expirySkew = 30 * time.Second

// NewCache wraps f for profile.
func NewCache(profile string, f Fetcher, opts CacheOptions) *Cache {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.HoldSignIn == 0 {
		opts.HoldSignIn = 10 * time.Second
	}
	return &Cache{profile: profile, fetcher: f, opts: opts, kick: make(chan struct{}, 1)}
}

// Token returns the cached token, or fetches one (once, for all callers
// waiting at the same time).
func (c *Cache) Token(ctx context.Context) (*oauth2.Token, error) {
	c.mu.Lock()
	tok, held, until, gen := c.tok, c.held, c.heldUntil, c.heldGen
	c.mu.Unlock()
	if c.usable(tok) {
		return tok, nil
	}
	if held != nil && c.opts.Now().Before(until) && (c.opts.Generation == nil || c.opts.Generation() == gen) {
		return nil, held
	}
	ch := c.group.DoChan("token", func() (any, error) { return c.refresh(ctx) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*oauth2.Token), nil
	case <-ctx.Done():
		return nil, &Error{Profile: c.profile, Err: ctx.Err()}
	}
}

func (c *Cache) usable(tok *oauth2.Token) bool {
	return tok != nil && (tok.Expiry.IsZero() || c.opts.Now().Add(expirySkew).Before(tok.Expiry))
}

// refresh fetches a token and records the outcome. The request is detached
// from the caller's cancellation: other callers may be waiting on it.
func (c *Cache) refresh(ctx context.Context) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
	defer cancel()
	tok, err := c.fetcher.Fetch(ctx)
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errors.New("token endpoint returned no access token")
	}
	now := c.opts.Now()
	var gen uint64
	if err != nil && c.opts.Generation != nil {
		gen = c.opts.Generation() // after the fetcher noted its failure in the store
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = nil
	if err != nil {
		e := &Error{Profile: c.profile, Err: err, NeedsSignIn: needsSignIn(err), Fix: c.opts.Fix}
		if e.NeedsSignIn {
			c.held, c.heldUntil, c.heldGen = e, now.Add(c.opts.HoldSignIn), gen
		}
		c.state.LastError = e.Error()
		became := e.NeedsSignIn && !c.state.NeedsSignIn
		c.state.NeedsSignIn = e.NeedsSignIn
		c.state.Failures++
		if became {
			c.opts.Logger.Error("a person must sign in", "event", "needs_sign_in", "profile", c.profile, "err", err, "fix", e.Fix)
			if c.opts.OnNeedsSignIn != nil {
				go c.opts.OnNeedsSignIn(e)
			}
		} else {
			c.opts.Logger.Warn("token request failed", "profile", c.profile, "err", err, "needs_sign_in", e.NeedsSignIn)
		}
		return nil, e
	}
	c.tok = tok
	c.state.ValidUntil = tok.Expiry
	c.state.LastRefresh = now
	c.state.LastError = ""
	c.state.NeedsSignIn = false
	c.state.Refreshes++
	c.opts.Logger.Debug("token refreshed", "profile", c.profile, "valid_until", tok.Expiry)
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return tok, nil
}

// Invalidate drops tok if it is still the cached one: the upstream refused
// it, so the next caller gets a new one.
func (c *Cache) Invalidate(tok *oauth2.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != nil && tok != nil && c.tok.AccessToken == tok.AccessToken {
		c.tok = nil
		c.state.ValidUntil = time.Time{}
	}
}

// Renew drops the cached token and wakes Run, after a person signed in again.
func (c *Cache) Renew() {
	c.mu.Lock()
	c.tok, c.held = nil, nil
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// State reports the token's state.
func (c *Cache) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Run fetches a token at once and then keeps it fresh: it refreshes when a
// quarter of the lifetime (at most 5 minutes) is left, and after a failure
// retries with exponential backoff and jitter. It returns when ctx ends.
func (c *Cache) Run(ctx context.Context) {
	backoff := time.Second
	for {
		wait := c.untilRefresh()
		if wait <= 0 {
			_, err, _ := c.group.Do("token", func() (any, error) { return c.refresh(ctx) })
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				wait = backoff/2 + rand.N(backoff/2+1)
				backoff = min(backoff*2, c.opts.MaxBackoff)
			default:
				backoff = time.Second
				wait = max(c.untilRefresh(), time.Second)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// untilRefresh is how long the current token may be kept before it is
// refreshed; zero or less means now.
func (c *Cache) untilRefresh() time.Duration {
	c.mu.Lock()
	tok, last := c.tok, c.state.LastRefresh
	c.mu.Unlock()
	switch {
	case tok == nil:
		return 0
	case tok.Expiry.IsZero():
		return time.Hour
	}
	ahead := min(tok.Expiry.Sub(last)/4, 5*time.Minute)
	return tok.Expiry.Add(-ahead).Sub(c.opts.Now())
}
