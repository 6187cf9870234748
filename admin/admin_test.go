package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

// fakeCache is a token cache whose state the test sets.
type fakeCache struct {
	mu     sync.Mutex
	st     tokens.State
	renews int
}

func (f *fakeCache) State() tokens.State { f.mu.Lock(); defer f.mu.Unlock(); return f.st }
func (f *fakeCache) Renew() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews++
	f.st = tokens.State{Usable: true, ValidUntil: time.Now().Add(time.Hour), LastRefresh: time.Now()}
}

// fakeGrant records the sign-in it is asked to finish.
type fakeGrant struct {
	mu       sync.Mutex
	redeemed []string // code + " " + verifier
}

func (g *fakeGrant) Fetch(context.Context) (*oauth2.Token, error) { return nil, errors.New("unused") }
func (g *fakeGrant) AuthCodeURL(_ context.Context, account, redirect, state, verifier string) (string, error) {
	return "https://idp.example/authorize?" + url.Values{"state": {state}, "redirect_uri": {redirect},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "login_hint": {account}}.Encode(), nil
}
func (g *fakeGrant) Redeem(_ context.Context, account, code, _, verifier string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.redeemed = append(g.redeemed, code+" "+verifier)
	return account, nil
}
func (g *fakeGrant) DeviceCode(context.Context, string) (*tokens.DeviceAuth, error) { return nil, nil }
func (g *fakeGrant) Remove(context.Context, string) (bool, error)                   { return false, nil }
func (g *fakeGrant) Key(a string) string                                            { return a }

func newTestServer(t *testing.T) (*httptest.Server, *fakeCache, *fakeGrant, *Metrics) {
	cache := &fakeCache{st: tokens.State{NeedsSignIn: true, LastError: "invalid_grant: AADSTS700082"}}
	grant := &fakeGrant{}
	m := NewMetrics(map[string]TokenSource{"crm": cache}, nil)
	s := New(Options{
		Profiles: []Profile{{Name: "crm", Credential: "microsoft365 (public app)", Account: "a@x", Tokens: cache, Delegated: grant}},
		Username: "admin", Password: "pw", Token: "bearer-1", Metrics: m,
		Test:  func(_ context.Context, p string) (string, bool) { return "  smtp   ok    " + p, true },
		Ready: func() []string { return nil },
	})
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, cache, grant, m
}

func do(t *testing.T, method, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func basic(u, p string) map[string]string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(u, p)
	return map[string]string{"Authorization": r.Header.Get("Authorization")}
}

func TestEverythingButProbesNeedsTheCredentials(t *testing.T) {
	ts, _, _, _ := newTestServer(t)
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"GET", "/", nil, 401},
		{"GET", "/", basic("admin", "wrong"), 401},
		{"GET", "/", basic("admin", "pw"), 200},
		{"GET", "/metrics", nil, 401},
		{"GET", "/metrics", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"GET", "/metrics", map[string]string{"Authorization": "Bearer bearer-1"}, 200},
		{"POST", "/profiles/crm/test", nil, 401},
		{"GET", "/healthz", nil, 200},
		{"GET", "/readyz", nil, 503},
	} {
		resp, _ := do(t, c.method, ts.URL+c.path, c.hdr)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		if resp.StatusCode == 401 && !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s %s: 401 without a Basic challenge", c.method, c.path)
		}
	}
}

func TestCrossSitePostsAreRefused(t *testing.T) {
	ts, _, _, _ := newTestServer(t)
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}} {
		hdr := basic("admin", "pw")
		for k, v := range h {
			hdr[k] = v
		}
		if resp, _ := do(t, "POST", ts.URL+"/profiles/crm/signin", hdr); resp.StatusCode != 403 {
			t.Errorf("%v: %d, want 403", h, resp.StatusCode)
		}
	}
	hdr := basic("admin", "pw")
	hdr["Sec-Fetch-Site"] = "same-origin"
	resp, body := do(t, "POST", ts.URL+"/profiles/crm/test", hdr)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="test-verdict" class="ok">passed`) || !strings.Contains(body, "smtp   ok    crm") {
		t.Fatalf("Test: %d %s", resp.StatusCode, body)
	}
}

func TestSignInRoundTripChecksStateOnce(t *testing.T) {
	ts, cache, grant, _ := newTestServer(t)
	if _, body := do(t, "GET", ts.URL+"/", basic("admin", "pw")); !strings.Contains(body, "sign-in needed") || !strings.Contains(body, `id="signin-crm"`) {
		t.Fatalf("page before sign-in: %s", body)
	}
	resp, _ := do(t, "POST", ts.URL+"/profiles/crm/signin", basic("admin", "pw"))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 303 || loc.Host != "idp.example" || loc.Query().Get("redirect_uri") != ts.URL+"/oauth/callback" {
		t.Fatalf("sign-in start: %d %s", resp.StatusCode, loc)
	}
	state := loc.Query().Get("state")
	// A callback with another state is refused and redeems nothing.
	if resp, body := do(t, "GET", ts.URL+"/oauth/callback?code=c1&state=forged", nil); resp.StatusCode != 400 || !strings.Contains(body, "unknown or expired") {
		t.Fatalf("forged state: %d", resp.StatusCode)
	}
	resp, _ = do(t, "GET", ts.URL+"/oauth/callback?code=c1&state="+url.QueryEscape(state), nil)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/?signed_in=crm" {
		t.Fatalf("callback: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if len(grant.redeemed) != 1 || !strings.HasPrefix(grant.redeemed[0], "c1 ") ||
		oauth2.S256ChallengeFromVerifier(strings.TrimPrefix(grant.redeemed[0], "c1 ")) != loc.Query().Get("code_challenge") {
		t.Fatalf("redeemed %v: the verifier must match the challenge sent", grant.redeemed)
	}
	if cache.renews != 1 {
		t.Fatal("the token cache was not told of the new grant")
	}
	// The same state cannot be used twice.
	if resp, _ := do(t, "GET", ts.URL+"/oauth/callback?code=c2&state="+url.QueryEscape(state), nil); resp.StatusCode != 400 {
		t.Fatalf("replayed state: %d", resp.StatusCode)
	}
	if _, body := do(t, "GET", ts.URL+"/?signed_in=crm", basic("admin", "pw")); !strings.Contains(body, "valid until") || !strings.Contains(body, `id="notice"`) {
		t.Fatalf("page after sign-in: %s", body)
	}
	if resp, _ := do(t, "GET", ts.URL+"/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("/readyz after sign-in: %d", resp.StatusCode)
	}
}

func TestMetricsCountWhatTheObserverIsTold(t *testing.T) {
	ts, _, _, m := newTestServer(t)
	m.LoggedIn("imap", "crm", 20*time.Millisecond)
	m.SessionStarted("imap", "crm")
	m.SessionEnded("imap", "crm", 100, 5000)
	m.SessionStarted("smtp", "crm")
	m.Relayed("crm", 2048, 30*time.Millisecond)
	m.Failed("pop3", "crm", &upstream.Error{Profile: "crm", Stage: "connect", Err: errors.New("refused")})
	m.Failed("smtp", "crm", &upstream.Error{Profile: "crm", Stage: upstream.StageToken, Kind: upstream.PersonNeeded,
		Err: &tokens.Error{Profile: "crm", Err: errors.New("invalid_grant"), NeedsSignIn: true}})
	_, body := do(t, "GET", ts.URL+"/metrics", map[string]string{"Authorization": "Bearer bearer-1"})
	for _, want := range []string{
		`mailproxy_sessions_total{profile="crm",protocol="imap"} 1`,
		`mailproxy_sessions_active{profile="crm",protocol="imap"} 0`,
		`mailproxy_sessions_active{profile="crm",protocol="smtp"} 1`,
		`mailproxy_relayed_bytes_total{direction="down",profile="crm",protocol="imap"} 5000`,
		`mailproxy_messages_relayed_total{profile="crm"} 1`,
		`mailproxy_message_bytes_total{profile="crm"} 2048`,
		`mailproxy_upstream_errors_total{class="unavailable",profile="crm",protocol="pop3"} 1`,
		`mailproxy_upstream_errors_total{class="sign_in",profile="crm",protocol="smtp"} 1`,
		`mailproxy_upstream_login_seconds_count{protocol="imap"} 1`,
		`mailproxy_token_needs_sign_in{profile="crm"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestWebhookRetriesAndNeverLogsItsURL(t *testing.T) {
	var mu sync.Mutex
	var got []Notice
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "busy", 503)
			return
		}
		var n Notice
		json.NewDecoder(r.Body).Decode(&n)
		got = append(got, n)
	}))
	defer srv.Close()
	var logs bytes.Buffer
	h := &Webhook{URL: srv.URL + "/secret-path", Client: srv.Client(), Logger: slog.New(slog.NewTextHandler(&logs, nil)), Backoff: 10 * time.Millisecond}
	h.NeedsSignIn(&tokens.Error{Profile: "crm", Err: errors.New("invalid_grant: gone"), NeedsSignIn: true, Fix: "run mailproxy token add crm"})
	if len(got) != 1 || got[0].Event != "needs_sign_in" || got[0].Profile != "crm" || got[0].Fix != "run mailproxy token add crm" || got[0].Error != "invalid_grant: gone" {
		t.Fatalf("notices %+v after %d calls", got, calls)
	}
	srv.Close()
	h.NeedsSignIn(&tokens.Error{Profile: "crm", Err: errors.New("x"), NeedsSignIn: true})
	if !strings.Contains(logs.String(), "webhook failed") || strings.Contains(logs.String(), "secret-path") {
		t.Fatalf("logs: %s", logs.String())
	}
}
