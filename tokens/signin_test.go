package tokens

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/idp"
)

// browser plays the person: it opens the authorize URL, fills in the fake
// IdP's sign-in form and follows the redirect back.
func browser(t *testing.T, hc *http.Client, user, password string) func(string) {
	return func(authURL string) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Transport: hc.Transport, Jar: jar, Timeout: 10 * time.Second, CheckRedirect: hc.CheckRedirect}
		resp, err := c.Get(authURL)
		if err != nil {
			t.Error(err)
			return
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		form := url.Values{}
		for _, m := range regexp.MustCompile(`name="([^"]+)" value="([^"]*)"`).FindAllStringSubmatch(string(page), -1) {
			form.Set(m[1], strings.ReplaceAll(strings.ReplaceAll(m[2], "&#43;", "+"), "&amp;", "&"))
		}
		form.Set("username", user)
		form.Set("password", password)
		resp, err = c.PostForm(resp.Request.URL.String(), form)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func delegatedSetup(t *testing.T) (*idp.Server, string, *http.Client, *Vault, []byte) {
	s, base, hc := fakeIdP(t)
	s.AddUser("alice@example.test", "alice-pw")
	s.AddUser("bob@example.test", "bob-pw")
	s.AddPublicApp(idp.PublicApp{Tenant: "contoso", ClientID: "app-1", RedirectURIs: []string{"http://localhost", "https://admin.example/cb"}})
	s.DeviceInterval = time.Second
	key, _ := ParseKey(NewKey())
	st, err := OpenStore(filepath.Join(t.TempDir(), "tokens.enc"), key)
	if err != nil {
		t.Fatal(err)
	}
	return s, base, hc, st, key
}

func generic(base string, hc *http.Client, st *Vault, account string) *OAuth2Delegated {
	d, _ := NewOAuth2Delegated(&OAuth2Delegated{AuthorizeURL: base + "/authorize", TokenURL: base + "/token", DeviceURL: base + "/device",
		ClientID: "app-1", Scopes: []string{"mail", "offline_access"}, PKCE: true, Account: account, Store: st, HTTPClient: hc})
	return d
}

func TestGenericBrowserSignInWithPKCEThenRefresh(t *testing.T) {
	s, base, hc, st, _ := delegatedSetup(t)
	d := generic(base, hc, st, "alice@example.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var shown string
	who, err := BrowserSignIn(ctx, d, "alice@example.test", "http://localhost", func(u string) {
		shown = u
		go browser(t, hc, "alice@example.test", "alice-pw")(u)
	})
	if err != nil || who != "alice@example.test" {
		t.Fatalf("sign-in: %q %v", who, err)
	}
	q, _ := url.Parse(shown)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("state") == "" || !strings.HasPrefix(q.Query().Get("redirect_uri"), "http://localhost:") {
		t.Fatalf("authorize URL lacks PKCE, state or the loopback redirect: %s", shown)
	}
	tok, err := NewCache("p", d, CacheOptions{}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mb, ok := s.Validate(tok.AccessToken); !ok || mb != "alice@example.test" {
		t.Fatal("refreshed token is not alice's")
	}
}

func TestCodeRedeemChecksVerifierAndState(t *testing.T) {
	_, base, hc, st, _ := delegatedSetup(t)
	d := generic(base, hc, st, "alice@example.test")
	ctx := context.Background()
	// A pasted redirect with a foreign state is refused before any request.
	_, err := PasteSignIn(ctx, d, "alice@example.test", "https://admin.example/cb", func(string) {},
		func() (string, error) { return "https://admin.example/cb?code=x&state=forged", nil })
	if err == nil || !strings.Contains(err.Error(), "state does not match") {
		t.Fatalf("forged state: %v", err)
	}
	// The pasted URL of a real sign-in works; the redirect page itself need not exist.
	var landed string
	noFollow := &http.Client{Transport: hc.Transport, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		landed = r.URL.String()
		return http.ErrUseLastResponse
	}}
	who, err := PasteSignIn(ctx, d, "bob@example.test", "https://admin.example/cb", browser(t, noFollow, "bob@example.test", "bob-pw"),
		func() (string, error) { return landed, nil })
	if err != nil || who != "bob@example.test" {
		t.Fatalf("paste sign-in: %q %v", who, err)
	}
	// A code redeemed with the wrong verifier: the provider's invalid_grant.
	state, verifier := NewState(), NewVerifier()
	authURL, _ := d.AuthCodeURL(ctx, "", "https://admin.example/cb", state, verifier)
	browser(t, noFollow, "alice@example.test", "alice-pw")(authURL)
	u, _ := url.Parse(landed)
	code, err := CodeFromRedirect(u, state)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Redeem(ctx, "", code, "https://admin.example/cb", NewVerifier())
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_grant" {
		t.Fatalf("wrong verifier: %v", err)
	}
}

func TestGenericDeviceCodePendingThenExpired(t *testing.T) {
	s, base, hc, st, _ := delegatedSetup(t)
	d := generic(base, hc, st, "alice@example.test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	da, err := d.DeviceCode(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if da.UserCode == "" || !strings.HasSuffix(da.VerificationURI, "/devicelogin") {
		t.Fatalf("device code: %+v", da)
	}
	go func() {
		for s.DevicePolls() < 2 { // the person takes a while: authorization_pending first
			time.Sleep(50 * time.Millisecond)
		}
		if err := s.ApproveDevice(da.UserCode, "alice@example.test", "alice-pw"); err != nil {
			t.Error(err)
		}
	}()
	who, err := da.Wait(ctx)
	if err != nil || who != "alice@example.test" {
		t.Fatalf("device sign-in: %q %v", who, err)
	}
	if e, ok := st.Get(bg, d.Key("alice@example.test")); !ok || e.RefreshToken == "" {
		t.Fatal("no refresh token stored")
	}
	// Nobody signs in: expired_token ends the wait.
	s.DeviceTTL = 1500 * time.Millisecond
	da, err = d.DeviceCode(ctx, "bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = da.Wait(ctx)
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "expired_token" {
		t.Fatalf("expired code: %v", err)
	}
}

func TestMicrosoftPublicDeviceCodeAndBrowserAccountsSurviveRestart(t *testing.T) {
	s, base, hc, st, key := delegatedSetup(t)
	s.RotateRefresh = true
	s.TTL = 2 * time.Minute // under MSAL's 5-minute margin: every Fetch redeems the refresh token
	newApp := func(st *Vault, account string) *MicrosoftPublic {
		app, err := NewMicrosoftApp(base, "contoso", "app-1", st, hc)
		if err != nil {
			t.Fatal(err)
		}
		return app.For(account, []string{"https://outlook.office.com/IMAP.AccessAsUser.All"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := newApp(st, "alice@example.test")
	if _, err := m.Fetch(ctx); err == nil || !needsSignIn(err) {
		t.Fatalf("before sign-in: %v", err)
	}
	da, err := m.DeviceCode(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(da.Message, da.UserCode) {
		t.Fatalf("message %q lacks the code", da.Message)
	}
	go func() {
		for s.DevicePolls() < 1 {
			time.Sleep(20 * time.Millisecond)
		}
		s.ApproveDevice(da.UserCode, "alice@example.test", "alice-pw")
	}()
	if who, err := da.Wait(ctx); err != nil || who != "alice@example.test" {
		t.Fatalf("device sign-in: %q %v", who, err)
	}
	// A second account, through the browser.
	if who, err := BrowserSignIn(ctx, m, "bob@example.test", "http://localhost", browser(t, hc, "bob@example.test", "bob-pw")); err != nil || who != "bob@example.test" {
		t.Fatalf("browser sign-in: %q %v", who, err)
	}
	// "Restart": a new store and a new MSAL client read the file.
	for _, acct := range []string{"alice@example.test", "bob@example.test"} {
		st2, err := OpenStore(st.String(), key)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			tok, err := newApp(st2, acct).Fetch(ctx)
			if err != nil {
				t.Fatalf("%s after restart: %v", acct, err)
			}
			if mb, ok := s.Validate(tok.AccessToken); !ok || mb != acct {
				t.Fatalf("%s: token for %q", acct, mb)
			}
		}
	}
	// Both accounts refresh at once, again and again, each time rotating its
	// refresh token (one MSAL client per app, as serve has): none is lost.
	app, _ := NewMicrosoftApp(base, "contoso", "app-1", st, hc)
	var wg sync.WaitGroup
	for _, acct := range []string{"alice@example.test", "bob@example.test"} {
		p := app.For(acct, []string{"https://outlook.office.com/IMAP.AccessAsUser.All"})
		wg.Go(func() {
			for range 10 {
				if _, err := p.Fetch(ctx); err != nil {
					t.Errorf("%s: concurrent refresh: %v", acct, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, acct := range []string{"alice@example.test", "bob@example.test"} {
		st2, _ := OpenStore(st.String(), key)
		if _, err := newApp(st2, acct).Fetch(ctx); err != nil {
			t.Fatalf("%s after concurrent refreshes and a restart: %v", acct, err)
		}
	}
	// The person's sessions are revoked: invalid_grant, a person is needed.
	s.RevokeUser("alice@example.test")
	_, err = newApp(st, "alice@example.test").Fetch(ctx)
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_grant" || !strings.Contains(oe.Description, "AADSTS700082") {
		t.Fatalf("revoked: %v", err)
	}
	if gone, err := m.Remove(ctx, "bob@example.test"); !gone || err != nil {
		t.Fatalf("remove: %v %v", gone, err)
	}
	if _, err := newApp(st, "bob@example.test").Fetch(ctx); !needsSignIn(err) {
		t.Fatalf("removed account still works: %v", err)
	}
}

// A server that says slow_down gets polled 5 s more slowly (RFC 8628 §3.5).
func TestDeviceCodeSlowsDownWhenTold(t *testing.T) {
	s, base, hc, st, _ := delegatedSetup(t)
	s.DeviceSlowDown = 1
	d := generic(base, hc, st, "alice@example.test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	da, err := d.DeviceCode(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApproveDevice(da.UserCode, "alice@example.test", "alice-pw"); err != nil {
		t.Fatal(err)
	}
	if who, err := da.Wait(ctx); err != nil || who != "alice@example.test" {
		t.Fatalf("device sign-in: %q %v", who, err)
	}
	polls := s.DevicePollTimes()
	if len(polls) != 2 || polls[1].Sub(polls[0]) < 5900*time.Millisecond {
		t.Fatalf("polls %v: want two, 1 s + 5 s apart after slow_down", polls)
	}
}
