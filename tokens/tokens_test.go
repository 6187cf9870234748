package tokens

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"software.sslmate.com/src/go-pkcs12"

	"mailproxy/idp"
)

// fakeIdP serves idp over HTTPS and returns it with a client that trusts it.
func fakeIdP(t testing.TB) (*idp.Server, string, *http.Client) {
	t.Helper()
	s := idp.New()
	ts := httptest.NewTLSServer(s)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s, ts.URL, ts.Client()
}

func TestConcurrentCallersShareOneTokenRequest(t *testing.T) {
	s, url, hc := fakeIdP(t)
	s.AddClient(idp.Client{ID: "c", Secret: "s", Mailbox: "a@x"})
	c := NewCache("p", NewClientCredentials(ClientCredentials{TokenURL: url + "/token", ClientID: "c", ClientSecret: "s", HTTPClient: hc}), CacheOptions{})
	var wg sync.WaitGroup
	var failures atomic.Int64
	start := make(chan struct{})
	for range 1000 {
		wg.Go(func() {
			<-start
			if _, err := c.Token(context.Background()); err != nil {
				failures.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d callers failed", failures.Load())
	}
	if n := s.TokenRequests(); n != 1 {
		t.Fatalf("1000 concurrent callers made %d token requests, want 1", n)
	}
}

func TestCacheRefreshesBeforeExpiryAndAfterInvalidate(t *testing.T) {
	var calls atomic.Int64
	now := time.Now()
	f := FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		n := calls.Add(1)
		return &oauth2.Token{AccessToken: "t" + string(rune('0'+n)), Expiry: now.Add(time.Hour)}, nil
	})
	c := NewCache("p", f, CacheOptions{Now: func() time.Time { return now }})
	tok, _ := c.Token(context.Background())
	tok2, _ := c.Token(context.Background())
	if tok != tok2 || calls.Load() != 1 {
		t.Fatalf("a valid token was fetched again (%d calls)", calls.Load())
	}
	now = now.Add(time.Hour - 25*time.Second) // 25 s left: less than the 30 s skew
	if tok3, _ := c.Token(context.Background()); tok3 == tok || calls.Load() != 2 {
		t.Fatalf("a token about to expire was handed out")
	}
	cur, _ := c.Token(context.Background())
	c.Invalidate(cur)
	if tok4, _ := c.Token(context.Background()); tok4 == cur || calls.Load() != 3 {
		t.Fatalf("an invalidated token was handed out")
	}
}

func TestCacheRunRetriesWithBackoffThenRecovers(t *testing.T) {
	var calls atomic.Int64
	f := FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		if calls.Add(1) < 3 {
			return nil, errors.New("connection refused")
		}
		return &oauth2.Token{AccessToken: "ok", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c := NewCache("p", f, CacheOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for c.State().Refreshes == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	st := c.State()
	if st.Refreshes != 1 || st.Failures != 2 || st.LastError != "" {
		t.Fatalf("state after two failures and a success: %+v", st)
	}
}

func TestMicrosoftClientSecretAndErrors(t *testing.T) {
	s, url, hc := fakeIdP(t)
	s.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "app1", Secret: "right", Mailbox: "a@x"})
	get := func(secret string) (*oauth2.Token, error) {
		f, err := NewMicrosoftConfidential(MicrosoftConfidential{Authority: url, TenantID: "contoso", ClientID: "app1",
			Secret: secret, Scopes: []string{"https://outlook.office365.com/.default"}, HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		return NewCache("sending", f, CacheOptions{}).Token(context.Background())
	}
	tok, err := get("right")
	if err != nil {
		t.Fatal(err)
	}
	if mb, ok := s.Validate(tok.AccessToken); !ok || mb != "a@x" {
		t.Fatalf("token not issued by the IdP for the app's mailbox")
	}
	if time.Until(tok.Expiry) < 50*time.Minute {
		t.Fatalf("expiry not taken from expires_in: %v", tok.Expiry)
	}
	_, err = get("wrong")
	var te *Error
	if !errors.As(err, &te) || !te.NeedsSignIn {
		t.Fatalf("wrong secret: want a permanent token error, got %v", err)
	}
	for _, want := range []string{`profile "sending"`, "invalid_client", "AADSTS7000215"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "wrong") && strings.Contains(err.Error(), "secret wrong") {
		t.Errorf("error shows the secret: %v", err)
	}
	s.FailNext(503)
	_, err = get("right")
	if !errors.As(err, &te) || te.NeedsSignIn {
		t.Fatalf("503: want a temporary token error, got %v", err)
	}
}

func writeCert(t *testing.T, dir string) (*x509.Certificate, string, string) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	pemPath := filepath.Join(dir, "app.pem")
	os.WriteFile(pemPath, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), 0o600)
	pfx, _ := pkcs12.Modern.Encode(key, cert, nil, "pw")
	pfxPath := filepath.Join(dir, "app.pfx")
	os.WriteFile(pfxPath, pfx, 0o600)
	return cert, pemPath, pfxPath
}

func TestMicrosoftCertificatePEMAndPFX(t *testing.T) {
	s, url, hc := fakeIdP(t)
	cert, pemPath, pfxPath := writeCert(t, t.TempDir())
	s.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "app2", Cert: cert, Mailbox: "a@x"})
	for _, tc := range []struct{ file, pass string }{{pemPath, ""}, {pfxPath, "pw"}} {
		f, err := NewMicrosoftConfidential(MicrosoftConfidential{Authority: url, TenantID: "contoso", ClientID: "app2",
			CertFile: tc.file, CertPassword: tc.pass, Scopes: []string{"https://outlook.office365.com/.default"}, HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := f.Fetch(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if _, ok := s.Validate(tok.AccessToken); !ok {
			t.Fatalf("%s: token not valid", tc.file)
		}
		hd, claims := s.LastJWT()
		if claims["iss"] != "app2" || claims["sub"] != "app2" || claims["aud"] != url+"/contoso/oauth2/v2.0/token" || hd["x5t#S256"] == nil {
			t.Fatalf("%s: client assertion header %v claims %v", tc.file, hd, claims)
		}
	}
	if _, err := NewMicrosoftConfidential(MicrosoftConfidential{Authority: url, TenantID: "contoso", ClientID: "app2",
		CertFile: pfxPath, CertPassword: "nope", HTTPClient: hc}); err == nil || !strings.Contains(err.Error(), "certificate_password") {
		t.Fatalf("wrong PFX password: %v", err)
	}
}

func TestGoogleServiceAccountJSONAndP12(t *testing.T) {
	s, url, hc := fakeIdP(t)
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	const email = "sa@proj.iam.gserviceaccount.com"
	s.AddServiceAccount(idp.ServiceAccount{Email: email, Key: &key.PublicKey, Scopes: []string{"https://mail.google.com/"}})
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	js, _ := json.Marshal(map[string]string{"type": "service_account", "client_email": email, "private_key_id": "k",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})), "token_uri": url + "/token"})
	jsonPath := filepath.Join(dir, "sa.json")
	os.WriteFile(jsonPath, js, 0o600)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	p12, _ := pkcs12.Legacy.Encode(key, cert, nil, "notasecret")
	p12Path := filepath.Join(dir, "sa.p12")
	os.WriteFile(p12Path, p12, 0o600)

	for _, g := range []GoogleServiceAccount{
		{KeyFile: jsonPath},
		{KeyFile: p12Path, Email: email, TokenURL: url + "/token"},
	} {
		g.Subject, g.Scopes, g.HTTPClient = "user@example.com", []string{"https://mail.google.com/"}, hc
		f, err := NewGoogleServiceAccount(g)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := f.Fetch(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", g.KeyFile, err)
		}
		if mb, ok := s.Validate(tok.AccessToken); !ok || mb != "user@example.com" {
			t.Fatalf("%s: token not for the impersonated user", g.KeyFile)
		}
		hd, c := s.LastJWT()
		if hd["alg"] != "RS256" || c["iss"] != email || c["sub"] != "user@example.com" ||
			c["scope"] != "https://mail.google.com/" || c["aud"] != url+"/token" {
			t.Fatalf("%s: JWT header %v claims %v", g.KeyFile, hd, c)
		}
	}
	// A scope the service account is not delegated: Google's unauthorized_client.
	f, _ := NewGoogleServiceAccount(GoogleServiceAccount{KeyFile: jsonPath, Subject: "u@x", Scopes: []string{"https://www.googleapis.com/auth/drive"}, HTTPClient: hc})
	_, err := NewCache("g", f, CacheOptions{}).Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unauthorized_client") || !needsSignIn(errors.Unwrap(err)) {
		t.Fatalf("undelegated scope: %v", err)
	}
}

func BenchmarkCachedToken(b *testing.B) {
	c := NewCache("p", FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}, nil
	}), CacheOptions{})
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Token(ctx)
		}
	})
}
