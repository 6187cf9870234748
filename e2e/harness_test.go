// Package e2e runs the real mailproxy binary against real Postfix and Dovecot
// (started here on loopback, validating XOAUTH2 tokens by introspection at a
// fake identity provider in this process), driven by real clients: swaks,
// curl and Python's smtplib.
//
// Without root, Dovecot or Postfix the tests skip, unless
// MAILPROXY_E2E_REQUIRED=1 (CI sets it), where that is a failure.
package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"mailproxy/idp"
)

// Identities registered at the fake IdP.
const (
	alice = "alice@example.test"
	bob   = "bob@example.test"
	carol = "carol@example.test"
	dave  = "dave@example.test"
	erin  = "erin@example.test"
	frank = "frank@example.test"
	// People who sign in (delegated credentials); nothing else reads their mail.
	gina         = "gina@example.test"
	hank         = "hank@example.test"
	ivy          = "ivy@example.test"
	tenant       = "contoso.example"
	msSecretApp  = "11111111-aaaa-4bbb-8ccc-000000000001"
	msSecret     = "ms-client-secret-value"
	msCertApp    = "11111111-aaaa-4bbb-8ccc-000000000002"
	msPublicApp  = "11111111-aaaa-4bbb-8ccc-000000000003"
	customApp    = "custom-provider-app"
	saEmail      = "mailer@mailproxy-e2e.iam.gserviceaccount.com"
	genericID    = "generic-client"
	genericSec   = "generic-secret"
	bobRefresh   = "rt-bob-initial"
	googleScope  = "https://mail.google.com/"
	localUser    = "app"
	localPass    = `p"a\ss word`
	e2eRequired  = "MAILPROXY_E2E_REQUIRED"
	portBase     = 17000
	deliveryWait = 20 * time.Second
)

// env is what TestMain set up.
var env struct {
	skip      string
	bin       string
	dir       string // servers' directory
	work      string // files the tests write
	idp       *idp.Server
	idpURL    string // HTTPS
	idpCA     string // PEM file mailproxy trusts (SSL_CERT_FILE)
	ca        string // the mail servers' CA
	subPort   int    // Postfix submission (STARTTLS required)
	subsPort  int    // Postfix submissions (implicit TLS)
	certPEM   string // Microsoft app certificate + key (PEM)
	certPFX   string // the same as PFX
	pfxPass   string
	saJSON    string
	saP12     string
	maildirOf func(user string) string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if reason := prerequisites(); reason != "" {
		if os.Getenv(e2eRequired) == "1" {
			fmt.Fprintf(os.Stderr, "e2e: %s, and %s=1: failing\n", reason, e2eRequired)
			return 1
		}
		env.skip = reason
		return m.Run()
	}
	cleanup, err := setup()
	defer cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	return m.Run()
}

func prerequisites() string {
	if os.Geteuid() != 0 {
		return "not root (Dovecot and Postfix are started as root)"
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/sbin/postfix", "/usr/lib/dovecot/lmtp"} {
		if _, err := os.Stat(p); err != nil {
			return p + " missing (apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix)"
		}
	}
	return ""
}

// need skips (or, in CI, fails) a test when the servers are missing.
func need(t testing.TB) {
	t.Helper()
	if env.skip != "" {
		t.Skip("e2e:", env.skip)
	}
}

func setup() (func(), error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	work, err := os.MkdirTemp("", "mailproxy-e2e-work-")
	if err != nil {
		return cleanup, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(work) })
	env.work = work

	// MAILPROXY_E2E_BIN runs the suite against a binary built elsewhere (a
	// release, or an older commit to see a test fail before its fix).
	env.bin = os.Getenv("MAILPROXY_E2E_BIN")
	if env.bin == "" {
		env.bin = filepath.Join(work, "mailproxy")
		build := exec.Command("go", "build", "-race", "-o", env.bin, "../cmd/mailproxy")
		if os.Getenv("MAILPROXY_E2E_NORACE") == "1" {
			build = exec.Command("go", "build", "-o", env.bin, "../cmd/mailproxy")
		}
		if out, err := build.CombinedOutput(); err != nil {
			return cleanup, fmt.Errorf("go build: %v\n%s", err, out)
		}
	}

	// The fake identity provider: HTTPS for mailproxy, HTTP for Dovecot.
	env.idp = idp.New()
	tlsSrv := httptest.NewUnstartedServer(env.idp)
	tlsSrv.StartTLS()
	cleanups = append(cleanups, tlsSrv.Close)
	plain := httptest.NewServer(env.idp)
	cleanups = append(cleanups, plain.Close)
	env.idpURL = tlsSrv.URL
	env.idp.URL = tlsSrv.URL
	env.idpCA = filepath.Join(work, "idp-ca.pem")
	if err := os.WriteFile(env.idpCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		return cleanup, err
	}
	if err := registerIdentities(work); err != nil {
		return cleanup, err
	}

	env.dir, err = os.MkdirTemp("", "mailproxy-e2e-servers-")
	if err != nil {
		return cleanup, err
	}
	start := exec.Command("bash", "testdata/servers.sh", env.dir)
	start.Env = append(os.Environ(), fmt.Sprintf("PEERS_PORT_BASE=%d", portBase),
		"E2E_INTROSPECT_URL="+plain.URL+"/introspect")
	out, err := start.CombinedOutput()
	cleanups = append(cleanups, func() {
		exec.Command("bash", "testdata/stop-servers.sh", env.dir).Run()
		os.RemoveAll(env.dir)
	})
	if err != nil {
		return cleanup, fmt.Errorf("servers.sh: %v\n%s", err, out)
	}
	env.ca = filepath.Join(env.dir, "tls", "ca.pem")
	env.subPort = portBase + 587
	env.subsPort = portBase + 465
	env.maildirOf = func(user string) string {
		local, domain, _ := strings.Cut(user, "@")
		return filepath.Join(env.dir, "mail", domain, local, "Maildir")
	}
	return cleanup, nil
}

// registerIdentities creates the credentials every profile type uses and
// registers them at the IdP: tokens for them are good for alice or bob.
func registerIdentities(work string) error {
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: msSecretApp, Secret: msSecret, Mailbox: alice})

	certKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailproxy e2e app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &certKey.PublicKey, certKey)
	if err != nil {
		return err
	}
	cert, _ := x509.ParseCertificate(der)
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: msCertApp, Cert: cert, Mailbox: alice})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(certKey)
	env.certPEM = filepath.Join(work, "app.pem")
	pemData := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(env.certPEM, pemData, 0o600); err != nil {
		return err
	}
	env.pfxPass = "pfx-pass"
	pfx, err := pkcs12.Modern.Encode(certKey, cert, nil, env.pfxPass)
	if err != nil {
		return err
	}
	env.certPFX = filepath.Join(work, "app.pfx")
	if err := os.WriteFile(env.certPFX, pfx, 0o600); err != nil {
		return err
	}

	saKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	env.idp.AddServiceAccount(idp.ServiceAccount{Email: saEmail, Key: &saKey.PublicKey, Scopes: []string{googleScope}})
	saDER, _ := x509.MarshalPKCS8PrivateKey(saKey)
	js, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "mailproxy-e2e", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER})),
		"client_email": saEmail, "client_id": "100000000000000000001",
		"auth_uri": env.idpURL + "/authorize", "token_uri": env.idpURL + "/token",
	})
	env.saJSON = filepath.Join(work, "sa.json")
	if err := os.WriteFile(env.saJSON, js, 0o600); err != nil {
		return err
	}
	// Google's legacy .p12: RC2/3DES, password "notasecret".
	saCertDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &saKey.PublicKey, saKey)
	if err != nil {
		return err
	}
	saCert, _ := x509.ParseCertificate(saCertDER)
	p12, err := pkcs12.Legacy.Encode(saKey, saCert, nil, "notasecret")
	if err != nil {
		return err
	}
	env.saP12 = filepath.Join(work, "sa.p12")
	if err := os.WriteFile(env.saP12, p12, 0o600); err != nil {
		return err
	}

	// People who sign in (token add, the admin page) to a public app.
	env.idp.AddPublicApp(idp.PublicApp{Tenant: tenant, ClientID: msPublicApp,
		RedirectURIs: []string{"http://localhost", "http://127.0.0.1/oauth/callback"}})
	for _, u := range []string{gina, hank, ivy} {
		env.idp.AddUser(u, personPassword(u))
	}
	env.idp.AddPublicApp(idp.PublicApp{ClientID: customApp, RedirectURIs: []string{"http://localhost/", pasteRedirect}})
	env.idp.DeviceInterval = time.Second
	env.idp.AddClient(idp.Client{ID: genericID, Secret: genericSec, Mailbox: bob})
	env.idp.AddRefreshToken(bobRefresh, bob)
	env.idp.RotateRefresh = true
	return nil
}

// proxy is a running mailproxy process.
type proxy struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	cfg  string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeConfig writes a configuration file for mailproxy.
func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	f, err := os.CreateTemp(env.work, "config-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(yaml)
	f.Close()
	return f.Name()
}

// startProxy runs `mailproxy serve` with yaml and waits until addrs accept.
func startProxy(t testing.TB, yaml string, addrs ...string) *proxy {
	t.Helper()
	return startProxyFile(t, writeConfig(t, yaml), addrs...)
}

// startProxyFile runs `mailproxy serve` with the configuration file cfg.
func startProxyFile(t testing.TB, cfg string, addrs ...string) *proxy {
	t.Helper()
	return startProxyUnder(t, nil, cfg, addrs...)
}

// startProxyUnder runs `mailproxy serve` with the configuration file cfg
// under the command prefix (prlimit, say).
func startProxyUnder(t testing.TB, prefix []string, cfg string, addrs ...string) *proxy {
	t.Helper()
	p := &proxy{t: t, logs: &syncBuffer{}, done: make(chan struct{}), cfg: cfg}
	args := append(append(slices.Clone(prefix), env.bin), "serve", "-config", cfg)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+env.idpCA)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("mailproxy log:\n%s", p.logs.String())
		}
		if strings.Contains(p.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("data race in mailproxy:\n%s", p.logs.String())
		}
	})
	for _, a := range addrs {
		waitListening(t, a, p)
	}
	return p
}

func (p *proxy) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func waitListening(t testing.TB, addr string, p *proxy) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("mailproxy exited: %s", p.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("mailproxy did not listen on %s: %s", addr, p.logs.String())
}

var handedOut sync.Map // addresses freeAddr gave, never given twice

// freeAddr returns a loopback address nothing listens on. The kernel may
// offer a just-closed port again, so an address is never handed out twice.
func freeAddr(t testing.TB) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
}

// waitForMessage returns the stored message of user that contains marker,
// or fails after deliveryWait.
func waitForMessage(t testing.TB, user, marker string) []byte {
	t.Helper()
	deadline := time.Now().Add(deliveryWait)
	for {
		if m := findMessage(user, marker); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message with %q in %s's mailbox after %s", marker, user, deliveryWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func findMessage(user, marker string) []byte {
	dir := env.maildirOf(user)
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err == nil && bytes.Contains(b, []byte(marker)) {
				return b
			}
		}
	}
	return nil
}

// assertNotDelivered checks, after a grace period, that no message with
// marker reached user.
func assertNotDelivered(t testing.TB, user, marker string) {
	t.Helper()
	time.Sleep(3 * time.Second)
	if findMessage(user, marker) != nil {
		t.Fatalf("a message with %q was delivered to %s, but the client was not told 250", marker, user)
	}
}

func uniqueMarker(t testing.TB) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%s-%x", strings.ReplaceAll(t.Name(), "/", "-"), b)
}

// upstreamYAML is an upstream block for Postfix submission (STARTTLS).
func upstreamYAML(extra string) string {
	return fmt.Sprintf(`      upstream:
        host: localhost:%d
        tls: starttls
        ca_file: %s
%s`, env.subPort, env.ca, extra)
}

// oauthProfile is a profile sending as mailbox with credentials creds.
func oauthProfile(name, listen, mailbox, creds, upstreamExtra string) string {
	return fmt.Sprintf(`  %s:
    mailbox: %s
    smtp:
      listen: %s
      max_message_bytes: 209715200
%s    local_users:
      - name: crm
        username: %s
        password: %q
    credentials:
%s`, name, mailbox, listen, upstreamYAML(upstreamExtra), localUser, localPass, creds)
}

func genericCreds() string {
	return fmt.Sprintf(`      type: oauth2
      token_url: %s/token
      client_id: %s
      client_secret: %s
`, env.idpURL, genericID, genericSec)
}

// Dovecot's IMAP and POP3 ports (servers.sh).
func imapsPort() int { return portBase + 993 }
func imapPort() int  { return portBase + 143 }
func pop3sPort() int { return portBase + 995 }
func pop3Port() int  { return portBase + 110 }
