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
	"net/url"
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

// PersonNeeded reports whether a person must act before a token can be had.
func (e *Error) PersonNeeded() bool { return e.NeedsSignIn }

// permanentCodes are OAuth error codes that no retry will fix.
var permanentCodes = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"invalid_scope": true, "interaction_required": true, "consent_required": true,
	"access_denied": true, "unsupported_grant_type": true,
}

// needsSignIn classifies a fetch error.
func needsSignIn(err error) bool {
	var ns *NotSignedInError
	if errors.As(err, &ns) {
		return true
	}
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
	// Usable: a login now gets this token (it is not within the expiry
	// margin), as Token sees it.
	Usable      bool
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
	// LoginWait bounds how long a caller waits for a token request under
	// way (default 10 s), well under what mail clients allow for a login;
	// the request goes on and its token serves the next login.
	LoginWait time.Duration
	// MaxBackoff caps the wait after failed requests (default 15 s). Until
	// it is over, every caller is answered with the failure from memory,
	// so an outage of the token endpoint does not turn every app login
	// into a token request.
	MaxBackoff time.Duration
	// Fix tells a person what to do when the credential needs them, e.g.
	// "run mailproxy token add crm" (default: fix the credential).
	Fix string
	// OnNeedsSignIn is called once each time the credential starts needing
	// a person (a refused or revoked grant), not on every failed request.
	// It must not block.
	OnNeedsSignIn func(*Error)
	// HoldSignIn is how long a failure that needs a person is answered
	// from memory rather than asking the provider again (default 10 s).
	HoldSignIn time.Duration
	// Generation, when set, changes with the token store (Vault.Generation):
	// a change ends a held failure at once (someone signed in), and drops
	// the token of an account that was removed (the fetcher's SignedIn).
	Generation func() uint64
}

// signedIn is implemented by fetchers of delegated credentials.
type signedIn interface{ SignedIn() bool }

// Cache is a Source that keeps the current token in memory, makes
// concurrent callers share one request, and (with Run) refreshes the token
// in the background before it expires.
type Cache struct {
	profile string
	fetcher Fetcher
	opts    CacheOptions
	group   singleflight.Group
	kick    chan struct{}
	// life ends the requests under way (Close).
	life context.Context
	end  context.CancelFunc

	mu    sync.Mutex
	tok   *oauth2.Token
	gen   uint64 // store generation last looked at
	state State
	// failure is the last failed request, answered until retryAt unless
	// the generation moves on from failGen.
	failure *Error
	retryAt time.Time
	failGen uint64
	backoff time.Duration
}

// expirySkew: a token this close to expiry is not handed out (see usable).
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
	if opts.LoginWait == 0 {
		opts.LoginWait = 10 * time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 15 * time.Second
	}
	if opts.HoldSignIn == 0 {
		opts.HoldSignIn = 10 * time.Second
	}
	c := &Cache{profile: profile, fetcher: f, opts: opts, kick: make(chan struct{}, 1)}
	c.life, c.end = context.WithCancel(context.Background())
	return c
}

// Close ends the token request under way, if any (at shutdown).
func (c *Cache) Close() { c.end() }

// Token returns the cached token, or fetches one (once, for all callers
// waiting at the same time). While a failed request is held, it answers
// with that failure at once; it waits at most LoginWait for a request.
func (c *Cache) Token(ctx context.Context) (*oauth2.Token, error) {
	now := c.opts.Now()
	c.mu.Lock()
	c.lookAtStore()
	tok, got, fail, retryAt, failGen := c.tok, c.state.LastRefresh, c.failure, c.retryAt, c.failGen
	c.mu.Unlock()
	if usable(tok, got, now) {
		return tok, nil
	}
	if fail != nil && now.Before(retryAt) && (c.opts.Generation == nil || c.opts.Generation() == failGen) {
		return nil, fail
	}
	ch := c.group.DoChan("token", func() (any, error) {
		// A request that ended between the look above and this one has
		// left a token: the caller takes it instead of asking again.
		c.mu.Lock()
		tok, got := c.tok, c.state.LastRefresh
		c.mu.Unlock()
		if usable(tok, got, c.opts.Now()) {
			return tok, nil
		}
		return c.refresh()
	})
	wait := time.NewTimer(c.opts.LoginWait)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*oauth2.Token), nil
	case <-wait.C:
		return nil, &Error{Profile: c.profile, Err: fmt.Errorf("the token endpoint has not answered within %s (still waiting for it)", c.opts.LoginWait)}
	case <-ctx.Done():
		return nil, &Error{Profile: c.profile, Err: ctx.Err()}
	}
}

// lookAtStore notices a change of the token store: a held failure is no
// longer trusted, and a removed account's token is dropped. The caller
// holds c.mu.
func (c *Cache) lookAtStore() {
	if c.opts.Generation == nil {
		return
	}
	g := c.opts.Generation()
	if g == c.gen {
		return
	}
	c.gen = g
	if si, ok := c.fetcher.(signedIn); ok && c.tok != nil && !si.SignedIn() {
		c.opts.Logger.Info("account removed from the token store: its token is dropped", "profile", c.profile)
		c.tok = nil
		c.state.ValidUntil = time.Time{}
	}
}

// usable reports whether tok, got at got, may be handed out at now: it is
// not within expirySkew of its expiry, or an eighth of its lifetime for a
// short-lived token (so that it is refreshed, a quarter ahead, before it
// stops being handed out).
func usable(tok *oauth2.Token, got, now time.Time) bool {
	if tok == nil {
		return false
	}
	if tok.Expiry.IsZero() {
		return true
	}
	skew := min(expirySkew, tok.Expiry.Sub(got)/8)
	return now.Add(skew).Before(tok.Expiry)
}

// refresh fetches a token and records the outcome. The request belongs to
// the cache, not to a caller: other callers may be waiting on it.
func (c *Cache) refresh() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(c.life, c.opts.FetchTimeout)
	defer cancel()
	// The store as it was before the request: a sign-in that lands while
	// it fails (another replica's, read meanwhile) ends the hold at once.
	// The fetcher's own note of a new error does too, once.
	var gen uint64
	if c.opts.Generation != nil {
		gen = c.opts.Generation()
	}
	tok, err := c.fetcher.Fetch(ctx)
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errors.New("token endpoint returned no access token")
	}
	if c.life.Err() != nil {
		return nil, &Error{Profile: c.profile, Err: errors.New("mailproxy is stopping")}
	}
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		public := withoutURL(err)
		e := &Error{Profile: c.profile, Err: public, NeedsSignIn: needsSignIn(err), Fix: c.opts.Fix}
		hold := c.opts.HoldSignIn
		if !e.NeedsSignIn {
			c.backoff = min(max(c.backoff*2, time.Second), c.opts.MaxBackoff)
			hold = c.backoff/2 + rand.N(c.backoff/2+1)
		}
		c.failure, c.retryAt, c.failGen = e, now.Add(hold), gen
		c.state.LastError = e.Error()
		became := e.NeedsSignIn && !c.state.NeedsSignIn
		c.state.NeedsSignIn = e.NeedsSignIn
		c.state.Failures++
		if became {
			c.opts.Logger.Error("a person must sign in", "event", "needs_sign_in", "profile", c.profile, "err", err, "fix", e.Fix)
			if c.opts.OnNeedsSignIn != nil {
				c.opts.OnNeedsSignIn(e)
			}
		} else {
			c.opts.Logger.Warn("token request failed", "profile", c.profile, "err", err, "needs_sign_in", e.NeedsSignIn, "retry_in", hold.Round(time.Millisecond))
		}
		return nil, e
	}
	c.tok, c.failure, c.backoff = tok, nil, 0
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

// withoutURL drops the token endpoint's URL from a transport error (Go's
// "Post \"https://…\": dial tcp …"): apps are told the cause, the log has
// the whole error.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("the token endpoint did not answer in time: %w", ue.Err)
		}
		return fmt.Errorf("cannot reach the token endpoint: %w", ue.Err)
	}
	return err
}

// rejecter is implemented by fetchers with a cache of their own (MSAL's),
// which must not hand out a token the upstream refused.
type rejecter interface{ Reject(*oauth2.Token) }

// Invalidate drops tok if it is still the cached one: the upstream refused
// it, so the next caller gets a new one.
func (c *Cache) Invalidate(tok *oauth2.Token) {
	if r, ok := c.fetcher.(rejecter); ok && tok != nil {
		r.Reject(tok)
	}
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
	c.tok, c.failure = nil, nil
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
	c.lookAtStore()
	st := c.state
	st.Usable = usable(c.tok, c.state.LastRefresh, c.opts.Now())
	return st
}

// Run fetches a token at once and then keeps it fresh: it refreshes when a
// quarter of the lifetime (at most 5 minutes) is left, and after a failure
// when the failure's hold ends (with backoff). It returns when ctx ends.
func (c *Cache) Run(ctx context.Context) {
	for {
		if wait := c.untilRefresh(); wait <= 0 {
			c.group.Do("token", func() (any, error) { return c.refresh() })
			if ctx.Err() != nil {
				return
			}
			continue
		} else {
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
}

// untilRefresh is how long the current token may be kept before it is
// refreshed; zero or less means now. After a failure it is the hold's end
// (for a failure that needs a person, 5 minutes or a sign-in: logins ask
// again after HoldSignIn meanwhile).
func (c *Cache) untilRefresh() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	switch {
	case c.failure != nil && c.failure.NeedsSignIn:
		if c.opts.Generation != nil && c.opts.Generation() != c.failGen {
			return 0
		}
		return c.retryAt.Add(5 * time.Minute).Sub(now)
	case c.failure != nil:
		return c.retryAt.Sub(now)
	case c.tok == nil:
		return 0
	case c.tok.Expiry.IsZero():
		return time.Hour
	}
	ahead := min(c.tok.Expiry.Sub(c.state.LastRefresh)/4, 5*time.Minute)
	return c.tok.Expiry.Add(-ahead).Sub(now)
}
