package tokens

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"mailproxy/idp"
)

// fullDisk is a FileStore whose writes fail while full is set, as on a
// full disk (the lock file exists already, so locking still works).
type fullDisk struct {
	*FileStore
	full atomic.Bool
}

func (f *fullDisk) Save(ctx context.Context, d *Data) error {
	if f.full.Load() {
		return &pathError{"write", f.path, syscall.ENOSPC}
	}
	return f.FileStore.Save(ctx, d)
}

type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// A refresh token the provider rotated while the store could not be
// written is kept, used, and saved once it can be: a full disk never makes
// a person sign in again.
func TestRotatedRefreshTokenSurvivesAFullDisk(t *testing.T) {
	s, tokenURL, hc := fakeIdP(t)
	s.RotateRefresh = true
	s.TTL = time.Minute
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	key, _ := ParseKey(NewKey())
	path := filepath.Join(t.TempDir(), "tokens.enc")
	fs, _ := NewFileStore(path, key)
	disk := &fullDisk{FileStore: fs}
	v, err := NewVault(bg, disk, VaultOptions{KeepInMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Initial: "rt-0", Store: v, HTTPClient: hc})
	if _, err := d.Fetch(bg); err != nil {
		t.Fatal(err)
	}
	disk.full.Store(true)
	for i := range 3 { // each redemption rotates the token again
		tok, err := d.Fetch(bg)
		if err != nil {
			t.Fatalf("refresh %d on a full disk: %v", i, err)
		}
		if _, ok := s.Validate(tok.AccessToken); !ok {
			t.Fatalf("refresh %d: token not valid", i)
		}
		d.Reject(tok) // so that the next Fetch redeems
	}
	if err := v.Durable(); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Durable on a full disk: %v", err)
	}
	// Another process sees the last token that could be saved; it is spent.
	disk.full.Store(false)
	if err := v.Flush(bg); err != nil {
		t.Fatalf("flush once the disk has room: %v", err)
	}
	if err := v.Durable(); err != nil {
		t.Fatalf("still not durable: %v", err)
	}
	restarted, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Store: newStore(t, path, key), HTTPClient: hc})
	if _, err := restarted.Fetch(bg); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

// A one-off command (check) does not redeem while the store cannot be
// written: the rotated token would be lost when it exits.
func TestOneOffCommandDoesNotRedeemOnAFullDisk(t *testing.T) {
	s, tokenURL, hc := fakeIdP(t)
	s.RotateRefresh = true
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	key, _ := ParseKey(NewKey())
	fs, _ := NewFileStore(filepath.Join(t.TempDir(), "tokens.enc"), key)
	disk := &fullDisk{FileStore: fs}
	v, _ := NewVault(bg, disk, VaultOptions{})
	d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Initial: "rt-0", Store: v, HTTPClient: hc})
	disk.full.Store(true)
	before := s.TokenRequests()
	if _, err := d.Fetch(bg); err == nil || !strings.Contains(err.Error(), "not redeeming") {
		t.Fatalf("want a refusal to redeem, got %v", err)
	}
	if s.TokenRequests() != before {
		t.Fatal("the refresh token was redeemed although the new one could not be kept")
	}
	disk.full.Store(false)
	if _, err := d.Fetch(bg); err != nil {
		t.Fatalf("once the disk has room: %v", err)
	}
}

// Two processes (two Vaults on one file: serve and check) refreshing one
// rotating grant at once never spend the same refresh token twice.
func TestTwoProcessesRedeemOneRotatingGrantInTurn(t *testing.T) {
	s, tokenURL, hc := fakeIdP(t)
	s.RotateRefresh = true
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	key, _ := ParseKey(NewKey())
	path := filepath.Join(t.TempDir(), "tokens.enc")
	var wg sync.WaitGroup
	for p := range 2 {
		v := newStore(t, path, key)
		d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Initial: "rt-0", Store: v, HTTPClient: hc})
		wg.Go(func() {
			for i := range 15 {
				if _, err := d.Fetch(bg); err != nil {
					t.Errorf("process %d, refresh %d: %v", p, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// token remove in another process ends the account's cached token in this
// one as soon as this process has looked at the store (every second).
func TestRemovedAccountLosesItsCachedToken(t *testing.T) {
	s, tokenURL, hc := fakeIdP(t)
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	key, _ := ParseKey(NewKey())
	path := filepath.Join(t.TempDir(), "tokens.enc")
	v := newStore(t, path, key)
	d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Store: v, HTTPClient: hc})
	v.Put(bg, d.Key("a@x"), Entry{RefreshToken: "rt-0"}) // as token add does
	c := NewCache("p", d, CacheOptions{Generation: v.Generation, Fix: "run mailproxy token add p"})
	if _, err := c.Token(bg); err != nil {
		t.Fatal(err)
	}
	other, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: tokenURL + "/token", ClientID: "pub", Account: "a@x", Store: newStore(t, path, key), HTTPClient: hc})
	if gone, err := other.Remove(bg, "a@x"); !gone || err != nil {
		t.Fatalf("remove: %v %v", gone, err)
	}
	v.Sync(bg)
	_, err := c.Token(bg)
	if err == nil {
		t.Fatal("the removed account's cached token is still handed out")
	}
	if !strings.Contains(err.Error(), "a@x is not signed in yet") || strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("after removal: %v", err)
	}
	var te *Error
	if !errors.As(err, &te) || !te.NeedsSignIn {
		t.Fatalf("not signed in is not a failure that needs a person: %v", err)
	}
}

// With the token endpoint down, the failure is held with backoff and
// shared by every login: 60 s of logins make a handful of requests.
func TestTokenEndpointOutageDoesNotStormIt(t *testing.T) {
	var fetches atomic.Int64
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		fetches.Add(1)
		return nil, &OAuthError{Status: 503, Code: "temporarily_unavailable", Description: "down"}
	})
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := NewCache("p", f, CacheOptions{Now: clock})
	for range 600 { // ten logins a second for 60 s
		if _, err := c.Token(bg); err == nil {
			t.Fatal("a token while the endpoint is down")
		}
		mu.Lock()
		now = now.Add(100 * time.Millisecond)
		mu.Unlock()
	}
	if n := fetches.Load(); n > 10 {
		t.Fatalf("%d token requests in 60 s of logins with the endpoint down, want at most 10", n)
	}
}

// A login does not wait for a token endpoint that hangs longer than
// LoginWait; the request goes on, and its token serves the next login.
func TestLoginWaitsBoundedForAHangingTokenEndpoint(t *testing.T) {
	release := make(chan struct{})
	f := FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		select {
		case <-release:
			return &oauth2.Token{AccessToken: "late", Expiry: time.Now().Add(time.Hour)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	c := NewCache("p", f, CacheOptions{LoginWait: 100 * time.Millisecond})
	start := time.Now()
	_, err := c.Token(bg)
	if took := time.Since(start); err == nil || took > 2*time.Second || !strings.Contains(err.Error(), "has not answered within 100ms") {
		t.Fatalf("after %v: %v", took, err)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tok, err := c.Token(bg); err == nil && tok.AccessToken == "late" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request that went on did not serve the next login")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Close ends a request under way at shutdown.
	hang := NewCache("p", FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) { <-ctx.Done(); return nil, ctx.Err() }), CacheOptions{LoginWait: time.Minute})
	go func() { time.Sleep(100 * time.Millisecond); hang.Close() }()
	start = time.Now()
	if _, err := hang.Token(bg); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Close did not end the request: %v after %v", err, time.Since(start))
	}
}

// The token URL is in the log, not in what apps are told.
func TestTransportErrorsDoNotShowTheTokenURL(t *testing.T) {
	secretURL := "https://login.example/tenant-1234/oauth2/v2.0/token"
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		return nil, &url.Error{Op: "Post", URL: secretURL, Err: errors.New("dial tcp 10.0.0.1:443: connect: connection refused")}
	})
	_, err := NewCache("p", f, CacheOptions{}).Token(bg)
	if err == nil || strings.Contains(err.Error(), "tenant-1234") || !strings.Contains(err.Error(), "cannot reach the token endpoint: dial tcp") {
		t.Fatalf("error for apps: %v", err)
	}
}

// A token inside the expiry margin is not usable: State says so too (the
// /readyz answer).
func TestStateUsableHasTheExpiryMargin(t *testing.T) {
	now := time.Now()
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: "t", Expiry: now.Add(time.Hour)}, nil
	})
	c := NewCache("p", f, CacheOptions{Now: func() time.Time { return now }})
	c.Token(bg)
	if !c.State().Usable {
		t.Fatal("a token valid for an hour is not usable")
	}
	now = now.Add(time.Hour - 20*time.Second) // 20 s left
	if c.State().Usable {
		t.Fatal("a token 20 s from expiry is reported usable, but logins would not get it")
	}
}

// A short-lived token's margin is an eighth of its lifetime, not 30 s
// (which would make a 5-second token never usable), and it is refreshed a
// quarter ahead, before the margin.
func TestShortLivedTokenHasAProportionalMargin(t *testing.T) {
	now := time.Now()
	var calls atomic.Int64
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		calls.Add(1)
		return &oauth2.Token{AccessToken: "t", Expiry: now.Add(8 * time.Second)}, nil
	})
	c := NewCache("p", f, CacheOptions{Now: func() time.Time { return now }})
	c.Token(bg)
	if _, err := c.Token(bg); err != nil || calls.Load() != 1 || !c.State().Usable {
		t.Fatalf("an 8-second token is not used: %d requests, %v", calls.Load(), err)
	}
	if d := c.untilRefresh(); d != 6*time.Second {
		t.Fatalf("refreshed %v from now, want 6s (2 s ahead)", d)
	}
	now = now.Add(7*time.Second + 100*time.Millisecond) // 0.9 s left, inside the 1 s margin
	if c.State().Usable {
		t.Fatal("an 8-second token 0.9 s from expiry is reported usable")
	}
}

// A token the upstream refused is not handed out again: the Microsoft
// confidential fetcher asks the endpoint every time (MSAL's own cache
// would answer with the refused token).
func TestInvalidatedMicrosoftTokenIsNotServedAgain(t *testing.T) {
	s, tokenURL, hc := fakeIdP(t)
	s.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "app1", Secret: "right", Mailbox: "a@x"})
	f, err := NewMicrosoftConfidential(MicrosoftConfidential{Authority: tokenURL, TenantID: "contoso", ClientID: "app1",
		Secret: "right", Scopes: []string{"https://outlook.office365.com/.default"}, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache("sending", f, CacheOptions{})
	first, err := c.Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	c.Invalidate(first)
	second, err := c.Token(bg)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken {
		t.Fatal("the refused token was handed out again")
	}
}

// The same for a Microsoft public app (delegated): MSAL's cache in the
// store would answer with the refused token; it redeems the refresh token.
func TestInvalidatedMicrosoftPublicTokenIsNotServedAgain(t *testing.T) {
	s, base, hc, st, _ := delegatedSetup(t)
	app, err := NewMicrosoftApp(base, "contoso", "app-1", st, hc)
	if err != nil {
		t.Fatal(err)
	}
	m := app.For("alice@example.test", []string{"https://outlook.office.com/IMAP.AccessAsUser.All"})
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	da, err := m.DeviceCode(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for s.DevicePolls() < 1 {
			time.Sleep(20 * time.Millisecond)
		}
		s.ApproveDevice(da.UserCode, "alice@example.test", "alice-pw")
	}()
	if _, err := da.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	c := NewCache("p", m, CacheOptions{Generation: st.Generation})
	first, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Invalidate(first)
	second, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken {
		t.Fatal("the refused token was handed out again")
	}
	if _, ok := s.Validate(second.AccessToken); !ok {
		t.Fatal("the new token is not valid")
	}
}

// A sign-in that another replica makes while this one's request fails
// (the store is read meanwhile) ends the hold at once: the next login
// asks again rather than being told "sign in" for HoldSignIn.
func TestSignInDuringAFailingRequestEndsTheHold(t *testing.T) {
	var gen atomic.Uint64
	var calls atomic.Int64
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		if calls.Add(1) == 1 {
			gen.Add(1) // the store changed while this request was under way
			return nil, &NotSignedInError{Account: "a@x"}
		}
		return &oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c := NewCache("p", f, CacheOptions{Generation: gen.Load, HoldSignIn: time.Minute})
	if _, err := c.Token(bg); err == nil {
		t.Fatal("first request succeeded")
	}
	if _, err := c.Token(bg); err != nil {
		t.Fatalf("a login after the sign-in was held: %v", err)
	}
}
