package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/tokens"
)

// personPassword is what a person types at the fake IdP's sign-in pages.
func personPassword(user string) string { return "pw-of-" + strings.Split(user, "@")[0] }

// idpClient is a browser-like HTTP client that trusts the fake IdP.
func idpClient(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(env.idpCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// publicCreds is a Microsoft 365 public app credential for account.
func publicCreds(account string) string {
	return fmt.Sprintf("      type: microsoft365\n      app: public\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      account: %s\n",
		env.idpURL, tenant, msPublicApp, account)
}

// delegatedProfile sends as and reads mailbox (an empty address leaves a
// protocol out) with a person's delegated grant.
func delegatedProfile(name, mailbox, smtpAddr, imapAddr string) string {
	y := fmt.Sprintf("  %s:\n    mailbox: %s\n", name, mailbox)
	if smtpAddr != "" {
		// One message per upstream session: each message needs a token.
		y += fmt.Sprintf("    smtp:\n      listen: %s\n%s", smtpAddr, upstreamYAML("        messages_per_session: 1\n"))
	}
	if imapAddr != "" {
		y += fmt.Sprintf("    imap:\n      listen: %s\n      upstream: {host: \"localhost:%d\", tls: implicit, ca_file: %q}\n", imapAddr, imapsPort(), env.ca)
	}
	return y + fmt.Sprintf("    local_users:\n      - {name: app, username: %s, password: %q}\n    credentials:\n%s", localUser, localPass, publicCreds(mailbox))
}

// terminal runs a mailproxy command as a person at a terminal would.
type terminal struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
	seen  int // output read so far
	done  chan error
}

func startTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	term := &terminal{t: t, out: &syncBuffer{}, done: make(chan error, 1)}
	term.cmd = exec.Command(env.bin, args...)
	term.cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+env.idpCA)
	term.cmd.Stdout, term.cmd.Stderr = term.out, term.out
	term.stdin, _ = term.cmd.StdinPipe()
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { term.done <- term.cmd.Wait() }()
	t.Cleanup(func() { term.cmd.Process.Kill() })
	return term
}

// expect waits for re in the output not yet read and returns its match.
func (term *terminal) expect(re string) []string {
	term.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		all := term.out.String()
		if loc := rx.FindStringSubmatchIndex(all[term.seen:]); loc != nil {
			m := rx.FindStringSubmatch(all[term.seen:])
			term.seen += loc[1]
			return m
		}
		select {
		case err := <-term.done:
			term.done <- err
			if m := rx.FindStringSubmatch(term.out.String()[term.seen:]); m != nil {
				return m
			}
			term.t.Fatalf("%v exited (%v) before printing %q:\n%s", term.cmd.Args, err, re, term.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	term.t.Fatalf("no %q in the output of %v:\n%s", re, term.cmd.Args, term.out.String())
	return nil
}

func (term *terminal) typeLine(s string) { io.WriteString(term.stdin, s+"\n") }

func (term *terminal) wait() {
	term.t.Helper()
	select {
	case err := <-term.done:
		if err != nil {
			term.t.Fatalf("%v: %v\n%s", term.cmd.Args, err, term.out.String())
		}
	case <-time.After(60 * time.Second):
		term.t.Fatalf("%v did not end:\n%s", term.cmd.Args, term.out.String())
	}
}

// approveDeviceCode is the person: they open the verification page the
// command printed, enter the code and sign in.
func approveDeviceCode(t *testing.T, page, code, user string) {
	t.Helper()
	resp, err := idpClient(t).PostForm(page, url.Values{"user_code": {code}, "username": {user}, "password": {personPassword(user)}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "You have signed in") {
		t.Fatalf("device page: %s", body)
	}
}

// tokenAdd runs mailproxy token add for profile and signs in accounts in
// turn, answering "add another account?" until the last.
func tokenAdd(t *testing.T, cfg, profile string, accounts ...string) string {
	t.Helper()
	term := startTerminal(t, "token", "add", "-config", cfg, profile)
	for i, acct := range accounts {
		m := term.expect(`open (?:the page )?(https://\S+) (?:in any browser )?and enter the code (\w+)`)
		approveDeviceCode(t, m[1], m[2], acct)
		term.expect(`Signed in as ` + regexp.QuoteMeta(acct))
		term.expect(`Add another account\? \[y/N\] `)
		if i == len(accounts)-1 {
			term.typeLine("n")
			break
		}
		term.typeLine("y")
		term.expect(`Account \(e-mail address\): `)
		term.typeLine(accounts[i+1])
	}
	term.wait()
	return term.out.String()
}

type hookReceiver struct {
	mu      sync.Mutex
	notices []map[string]any
	url     string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n map[string]any
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad notice", 400)
			return
		}
		h.mu.Lock()
		h.notices = append(h.notices, n)
		h.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hooks/T0001/B0002/hook-secret-path"
	return h
}

func (h *hookReceiver) received() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.notices...)
}

// get fetches an admin URL with the bearer token and returns status and body.
func get(t *testing.T, u, bearer string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A person signs in twice with token add (device code, two accounts); the
// proxy then sends and reads with those grants. When the grant is revoked,
// the app gets a temporary error naming the fix, the webhook, /readyz and
// /metrics say so, and signing in again heals the running proxy.
func TestDelegatedTokenLifecycle(t *testing.T) {
	need(t)
	// Access tokens under MSAL's 5-minute margin: every token request
	// redeems the refresh token, as after an hour in production.
	env.idp.TTL = 2 * time.Minute
	t.Cleanup(func() { env.idp.TTL = time.Hour })
	store := filepath.Join(t.TempDir(), "tokens.enc")
	smtpAddr, imapGina, imapHank, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	hook := newHookReceiver(t)
	const adminToken = "admin-bearer-secret-value"
	cfg := writeConfig(t, fmt.Sprintf(`token_store:
  path: %s
  key: %s
log: {level: debug}
admin:
  listen: %s
  token: %s
alerts:
  webhook_url: %s
profiles:
%s%s`, store, tokens.NewKey(), adminAddr, adminToken, hook.url,
		delegatedProfile("delegated", gina, smtpAddr, imapGina), delegatedProfile("hank-reads", hank, "", imapHank)))

	addOut := tokenAdd(t, cfg, "delegated", gina, hank)
	if !strings.Contains(addOut, "credentials.account: "+hank) {
		t.Errorf("token add did not say which profile setting uses the second account:\n%s", addOut)
	}
	list, err := exec.Command(env.bin, "token", "list", "-config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("token list: %v\n%s", err, list)
	}
	for _, want := range []string{msPublicApp + "/" + gina, "delegated", msPublicApp + "/" + hank, "hank-reads", "IMAP.AccessAsUser.All"} {
		if !strings.Contains(string(list), want) {
			t.Errorf("token list lacks %q:\n%s", want, list)
		}
	}
	if fi, err := os.Stat(store); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token store: %v %v", fi, err)
	}
	if raw, _ := os.ReadFile(store); regexp.MustCompile(`rt-|at-|` + gina).Match(raw) {
		t.Fatal("token store holds a token or an account in clear text")
	}

	p := startProxyFile(t, cfg, smtpAddr, imapGina, imapHank, adminAddr)
	admin := "http://" + adminAddr
	eventually(t, "/readyz is 200 once both grants gave tokens", func() bool {
		code, _ := get(t, admin+"/readyz", "")
		return code == 200
	})

	// A real client sends with gina's grant and reads gina's and hank's mailboxes.
	marker := uniqueMarker(t)
	if r := pySend(t, smtpAddr, localUser, localPass, bob, simpleMessage(marker), 1); !r.OK {
		t.Fatalf("send: %+v", r)
	}
	waitForMessage(t, bob, marker)
	readsThrough(t, gina, imapGina)
	readsThrough(t, hank, imapHank)
	wants := []string{`mailproxy_messages_relayed_total{profile="delegated"} 1`, `mailproxy_sessions_total{profile="hank-reads",protocol="imap"} 1`,
		`mailproxy_sessions_total{profile="delegated",protocol="smtp"} 1`, `mailproxy_relayed_bytes_total{direction="up",profile="delegated",protocol="smtp"} 209`,
		`mailproxy_token_needs_sign_in{profile="delegated"} 0`, `mailproxy_upstream_login_seconds_count{protocol="imap"} 2`}
	var metrics string
	eventually(t, "/metrics counts the sessions (they count once closed)", func() bool {
		var code int
		code, metrics = get(t, admin+"/metrics", adminToken)
		for _, want := range wants {
			if code != 200 || !strings.Contains(metrics, want) {
				return false
			}
		}
		return true
	})
	if code, _ := get(t, admin+"/metrics", ""); code != 401 {
		t.Errorf("/metrics without the token: %d, want 401", code)
	}

	// An admin revokes gina's sessions: a person must sign in again.
	env.idp.RevokeUser(gina)
	host, port, _ := net.SplitHostPort(imapGina)
	for range 3 {
		r := runPyRaw(t, "imapclient.py", host, port, localUser, localPass, "quoted", "fetch", "none", filepath.Join(t.TempDir(), "x"))
		if !strings.Contains(r, "UNAVAILABLE") || !strings.Contains(r, "mailproxy token add delegated") {
			t.Fatalf("IMAP login after revocation: want NO [UNAVAILABLE] naming the fix, got %s", r)
		}
	}
	if r := pySend(t, smtpAddr, localUser, localPass, bob, simpleMessage(uniqueMarker(t)), 1); r.OK || r.Code/100 != 4 || !strings.Contains(r.Msg, "mailproxy token add delegated") {
		t.Fatalf("SMTP after revocation: want 4xx naming the fix, got %+v", r)
	}
	eventually(t, "the webhook got the notice", func() bool { return len(hook.received()) > 0 })
	time.Sleep(time.Second) // a second notice would come now
	if n := hook.received(); len(n) != 1 || n[0]["event"] != "needs_sign_in" || n[0]["profile"] != "delegated" ||
		!strings.Contains(n[0]["fix"].(string), "mailproxy token add delegated") || !strings.Contains(n[0]["error"].(string), "invalid_grant") {
		t.Fatalf("webhook notices: %v", n)
	}
	if c := strings.Count(p.logs.String(), `level=ERROR msg="a person must sign in" event=needs_sign_in`); c != 1 {
		t.Fatalf("%d needs_sign_in log events, want 1", c)
	}
	code, ready := get(t, admin+"/readyz", "")
	if code != 503 || !strings.Contains(ready, "profile delegated: a person must sign in") || strings.Contains(ready, "hank-reads") {
		t.Fatalf("/readyz after revocation: %d %s", code, ready)
	}
	if _, metrics := get(t, admin+"/metrics", adminToken); !strings.Contains(metrics, `mailproxy_token_needs_sign_in{profile="delegated"} 1`) ||
		!strings.Contains(metrics, `mailproxy_upstream_errors_total{class="sign_in",profile="delegated",protocol="imap"}`) {
		t.Fatalf("/metrics after revocation lacks the sign-in gauge or error class:\n%s", grepLines(metrics, "delegated"))
	}

	// gina signs in again while mailproxy runs: no restart needed.
	tokenAdd(t, cfg, "delegated", gina)
	readsThrough(t, gina, imapGina)
	eventually(t, "/readyz is 200 again", func() bool { code, _ := get(t, admin+"/readyz", ""); return code == 200 })

	// Nothing secret in any output, at debug level.
	all := p.logs.String() + addOut + string(list) + metrics
	for _, leak := range []*regexp.Regexp{regexp.MustCompile(`\b(rt|at|code|dc)-[A-Za-z0-9_-]{16,}`), regexp.MustCompile(regexp.QuoteMeta(localPass)),
		regexp.MustCompile(adminToken), regexp.MustCompile("hook-secret-path"), regexp.MustCompile(personPassword(gina))} {
		if m := leak.FindString(all); m != "" {
			t.Fatalf("secret in the output: %q", m)
		}
	}
}

// runPyRaw runs a client script and returns its output, success or not.
func runPyRaw(t *testing.T, script string, args ...string) string {
	t.Helper()
	out, _ := exec.Command("/usr/bin/python3", append([]string{"testdata/" + script}, args...)...).CombinedOutput()
	return string(out)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The generic provider by configuration: the Microsoft preset with its
// {tenant} URLs (device code, x/oauth2 rather than MSAL) and a custom
// provider given only by URLs (browser sign-in with PKCE and a loopback
// redirect to token add). Each grant then logs a real client in to Dovecot.
func TestGenericProviderSignIns(t *testing.T) {
	need(t)
	imapHank, imapIvy := freeAddr(t), freeAddr(t)
	msCreds := fmt.Sprintf("      type: oauth2\n      provider: microsoft\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n", env.idpURL, tenant, msPublicApp)
	customCreds := fmt.Sprintf("      type: oauth2\n      authorize_url: %s/authorize\n      token_url: %s/token\n      client_id: %s\n      scopes: [mail, offline_access]\n      params: {prompt: consent}\n",
		env.idpURL, env.idpURL, customApp)
	imapPaste := freeAddr(t)
	pasteCreds := customCreds + "      redirect_url: " + pasteRedirect + "\n"
	cfg := writeConfig(t, fmt.Sprintf("token_store:\n  path: %s\n  key: %s\nprofiles:\n%s%s%s",
		filepath.Join(t.TempDir(), "tokens.enc"), tokens.NewKey(),
		receivingProfile("ms-generic", imapHank, "", hank, msCreds), receivingProfile("custom", imapIvy, "", ivy, customCreds),
		receivingProfile("custom-paste", imapPaste, "", gina, pasteCreds)))

	tokenAdd(t, cfg, "ms-generic", hank)

	term := startTerminal(t, "token", "add", "-config", cfg, "custom")
	m := term.expect(`sign in as \S+:\s+(https://\S+)`)
	u, _ := url.Parse(m[1])
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("prompt") != "consent" || !strings.HasPrefix(q.Get("redirect_uri"), "http://localhost:") {
		t.Fatalf("authorize URL: %s", m[1])
	}
	browseAndSignIn(t, m[1], ivy, true)
	term.expect(`Signed in as ` + regexp.QuoteMeta(ivy))
	term.expect(`Add another account\? \[y/N\] `)
	term.typeLine("")
	term.wait()

	// A redirect mailproxy cannot listen on: the person pastes where the browser ended.
	term = startTerminal(t, "token", "add", "-paste", "-config", cfg, "custom-paste")
	m = term.expect(`sign in as \S+:\s+(https://\S+)`)
	landed := browseAndSignIn(t, m[1], gina, false)
	if !strings.HasPrefix(landed, pasteRedirect+"?") {
		t.Fatalf("the provider sent the browser to %s", landed)
	}
	term.expect(`paste the address`)
	term.typeLine(landed)
	term.expect(`Signed in as ` + regexp.QuoteMeta(gina))
	term.expect(`Add another account\? \[y/N\] `)
	term.typeLine("n")
	term.wait()

	startProxyFile(t, cfg, imapHank, imapIvy, imapPaste)
	readsThrough(t, hank, imapHank)
	readsThrough(t, ivy, imapIvy)
	readsThrough(t, gina, imapPaste)
}

// pasteRedirect is a registered redirect nothing listens on.
const pasteRedirect = "https://app.example/oauth/done"

// readsThrough delivers a message to user and reads it back with imaplib
// through mailproxy's IMAP listener at addr, byte for byte.
func readsThrough(t *testing.T, user, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	marker := uniqueMarker(t)
	stored := deliver(t, user, messageWith(marker), marker)
	out := filepath.Join(t.TempDir(), "fetched.eml")
	if b, err := pyFetch(host, port, localUser, localPass, "quoted")(marker, out); err != nil {
		t.Fatalf("%s: %v\n%s", user, err, b)
	}
	got, _ := os.ReadFile(out)
	sameBytes(t, user+" FETCH BODY[]", got, stored)
}

// submitSignIn fills in the fake IdP's sign-in page that resp holds, as
// user with password, and returns where the browser ended and its body.
func submitSignIn(t *testing.T, c *http.Client, resp *http.Response, user, password string) (*http.Response, string) {
	t.Helper()
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{}
	for _, m := range regexp.MustCompile(`type="hidden" name="([^"]+)" value="([^"]*)"`).FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	form.Set("username", user)
	form.Set("password", password)
	resp, err := c.PostForm(resp.Request.URL.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// browseAndSignIn is a person's browser: it opens authURL and signs in as
// user on the provider's form. With follow, it follows the redirect to
// token add; without, it returns where the provider sent it.
func browseAndSignIn(t *testing.T, authURL, user string, follow bool) string {
	t.Helper()
	c := idpClient(t)
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := submitSignIn(t, c, resp, user, personPassword(user))
	if !follow {
		return resp.Header.Get("Location")
	}
	if !strings.Contains(body, "Signed in as "+user) {
		t.Fatalf("the browser ended on %s: %s", resp.Request.URL, body)
	}
	return resp.Request.URL.String()
}
