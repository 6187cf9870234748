package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `
profiles:
  sending:
    mailbox: crm@contoso.com
    smtp:
      listen: "2525"
      upstream:
        host: smtp.office365.com
    local_users:
      - username: crm
        password: ${env:CFG_TEST_PW}
    credentials:
      type: microsoft365
      tenant_id: contoso
      client_id: abc
      client_secret: file:SECRETFILE
  billing:
    inherit: sending
    mailbox: billing@contoso.com
    smtp:
      listen: 127.0.0.1:2526
`

func TestParseAppliesDefaultsInheritanceAndSecrets(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("from-file\n"), 0o600)
	t.Setenv("CFG_TEST_PW", "from-env")
	cfg, err := Parse([]byte(strings.Replace(good, "SECRETFILE", secret, 1)))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Profiles["sending"]
	if s.SMTP.Listen != "127.0.0.1:2525" || s.SMTP.Upstream.Host != "smtp.office365.com:587" ||
		s.SMTP.Upstream.MessagesPerSession != 3 || s.SMTP.Upstream.Mechanism != "xoauth2" {
		t.Fatalf("defaults: %+v", s.SMTP)
	}
	if s.Credentials.ClientSecret.Value() != "from-file" || s.LocalUsers[0].Password.Value() != "from-env" {
		t.Fatal("secret references not resolved")
	}
	b := cfg.Profiles["billing"]
	if b.Mailbox != "billing@contoso.com" || b.SMTP.Listen != "127.0.0.1:2526" ||
		b.Credentials.TenantID != "contoso" || b.SMTP.Upstream.Host != "smtp.office365.com:587" {
		t.Fatalf("inheritance: %+v %+v", b, b.SMTP)
	}
}

func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	bad := `
profiles:
  sending:
    smtp:
      listen: 0.0.0.0:25
      local_auth: none
      upstream:
        tls: sometimes
    credentials:
      type: microsoft365
      client_secret: ${env:CFG_TEST_MISSING}
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"profiles.sending.mailbox: required",
		"profiles.sending.credentials.tenant_id: required for microsoft365",
		"profiles.sending.credentials.client_id: required",
		"profiles.sending.credentials.client_secret: environment variable CFG_TEST_MISSING is not set",
		"profiles.sending.smtp.local_auth: none is allowed on loopback only",
		"profiles.sending.smtp.listen: 0.0.0.0:25 is not loopback",
		"profiles.sending.smtp.upstream.tls: \"sometimes\"",
		"profiles.sending.smtp.upstream.host: required",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in:\n%v", want, err)
		}
	}
}

func TestUnknownKeysAndSharedListenerConflicts(t *testing.T) {
	if _, err := Parse([]byte("profiles:\n  a:\n    mailbx: x\n")); err == nil || !strings.Contains(err.Error(), "mailbx") {
		t.Fatalf("unknown key: %v", err)
	}
	shared := `
profiles:
  a:
    mailbox: a@x
    smtp: {listen: "2525", upstream: {host: h}}
    local_users: [{username: app, password: p1}]
    credentials: {type: basic, password: pw}
  b:
    mailbox: b@x
    smtp: {listen: "2525", upstream: {host: h}}
    local_users: [{username: app, password: p2}]
    credentials: {type: basic, password: pw}
`
	if _, err := Parse([]byte(shared)); err == nil || !strings.Contains(err.Error(), `local username "app" is used by profiles "a" and "b"`) {
		t.Fatalf("shared listener with one username: %v", err)
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	s := NewSecret("hunter2")
	for _, got := range []string{s.String(), s.GoString()} {
		if strings.Contains(got, "hunter2") {
			t.Fatalf("secret printed: %q", got)
		}
	}
}

func TestIMAPAndPOP3DefaultToImplicitTLSPortsAndPasswordLogins(t *testing.T) {
	cfg, err := Parse([]byte(`
profiles:
  receiving:
    mailbox: shared@contoso.com
    imap: {listen: "1143", upstream: {host: outlook.office365.com}}
    pop3: {listen: "1110", upstream: {host: outlook.office365.com, tls: starttls}}
    local_users: [{username: app, password: pw}]
    credentials: {type: oauth2, token_url: https://idp/token, client_id: c, refresh_token: rt, account: delegate@contoso.com}
  basic:
    mailbox: old@example.com
    imap: {listen: "1144", upstream: {host: imap.example.com}}
    local_users: [{username: app2, password: pw}]
    credentials: {type: basic, password: pw}
token_store: {path: /tmp/x, key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Profiles["receiving"]
	if r.IMAP.Listen != "127.0.0.1:1143" || r.IMAP.Upstream.Host != "outlook.office365.com:993" ||
		r.IMAP.Upstream.TLS != TLSImplicit || r.IMAP.Upstream.Mechanism != "xoauth2" {
		t.Errorf("imap defaults: %+v", r.IMAP)
	}
	if r.POP3.Upstream.Host != "outlook.office365.com:110" || r.POP3.Upstream.TLS != TLSStartTLS {
		t.Errorf("pop3 defaults: %+v", r.POP3)
	}
	if r.Credentials.Account != "delegate@contoso.com" || r.Mailbox != "shared@contoso.com" {
		t.Errorf("token owner and mailbox must stay apart: %q %q", r.Credentials.Account, r.Mailbox)
	}
	if m := cfg.Profiles["basic"].IMAP.Upstream.Mechanism; m != "login" {
		t.Errorf("basic imap mechanism = %q, want login", m)
	}
}

func TestListenersOfDifferentProtocolsMayNotShareAnAddress(t *testing.T) {
	_, err := Parse([]byte(`
profiles:
  a:
    mailbox: a@x
    smtp: {listen: "2525", upstream: {host: h}}
    imap: {listen: "2525", upstream: {host: h}, tls: {mode: sometimes, cert_file: c, key_file: k}}
    local_users: [{username: app, password: p1}]
    credentials: {type: basic, password: pw}
  b:
    mailbox: b@x
    pop3: {listen: "0.0.0.0:1110", upstream: {host: h}}
    credentials: {type: basic, password: pw}
`))
	for _, want := range []string{
		`profiles.a.imap.listen: 127.0.0.1:2525 is already the smtp listener of profile "a"`,
		`profiles.a.imap.tls.mode: "sometimes" is not one of starttls, implicit`,
		`profiles.b.pop3.listen: 0.0.0.0:1110 is not loopback`,
		`profiles.b.local_users: required`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in:\n%v", want, err)
		}
	}
}

func TestDelegatedCredentialsAndProviderPresets(t *testing.T) {
	cfg, err := Parse([]byte(`
token_store: {path: /tmp/t.enc, key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
profiles:
  public:
    mailbox: shared@contoso.com
    imap: {listen: "1143", upstream: {host: outlook.office365.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: microsoft365, app: public, tenant_id: contoso, client_id: c1, account: me@contoso.com}
  ms:
    mailbox: me@contoso.com
    imap: {listen: "1144", upstream: {host: outlook.office365.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: oauth2, provider: microsoft, tenant_id: contoso, client_id: c2}
  gmail:
    mailbox: me@gmail.com
    imap: {listen: "1145", upstream: {host: imap.gmail.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: oauth2, provider: google, client_id: c3, client_secret: s}
  custom:
    mailbox: me@example.com
    imap: {listen: "1146", upstream: {host: imap.example.com}}
    local_users: [{username: a, password: b}]
    credentials:
      type: oauth2
      tenant_id: t9
      authorize_url: https://login.example.com/{tenant}/auth
      token_url: https://login.example.com/{tenant}/token
      client_id: c4
      pkce: false
      params: {audience: mail}
`))
	if err != nil {
		t.Fatal(err)
	}
	pub := cfg.Profiles["public"].Credentials
	if !pub.Delegated() || pub.Account != "me@contoso.com" || pub.Scopes[0] != "https://outlook.office.com/IMAP.AccessAsUser.All" || pub.RedirectURL != "http://localhost" {
		t.Fatalf("public app: %+v", pub)
	}
	ms := cfg.Profiles["ms"].Credentials
	if ms.Grant != GrantRefreshToken || ms.TokenURL != "https://login.microsoftonline.com/contoso/oauth2/v2.0/token" ||
		ms.DeviceURL != "https://login.microsoftonline.com/contoso/oauth2/v2.0/devicecode" || ms.Account != "me@contoso.com" || !*ms.PKCE {
		t.Fatalf("microsoft preset: %+v", ms)
	}
	g := cfg.Profiles["gmail"].Credentials
	if g.DeviceURL != "" || g.Params["access_type"] != "offline" || g.Scopes[0] != "https://mail.google.com/" {
		t.Fatalf("google preset: %+v", g)
	}
	c := cfg.Profiles["custom"].Credentials
	if c.AuthorizeURL != "https://login.example.com/t9/auth" || c.Grant != GrantRefreshToken || *c.PKCE || c.Params["audience"] != "mail" {
		t.Fatalf("custom: %+v", c)
	}

	_, err = Parse([]byte(`
admin: {listen: "0.0.0.0:8025", username: admin}
alerts: {webhook_url: "ftp://x"}
profiles:
  public:
    mailbox: shared@contoso.com
    imap: {listen: "1143", upstream: {host: outlook.office365.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: microsoft365, app: public, tenant_id: contoso, client_id: c1, client_secret: x}
  custom:
    mailbox: me@example.com
    imap: {listen: "1146", upstream: {host: imap.example.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: oauth2, provider: yahoo, authorize_url: "https://x/{tenant}/a", token_url: https://x/t, client_id: c}
  nowhere:
    mailbox: me@example.com
    imap: {listen: "1147", upstream: {host: imap.example.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: oauth2, grant: refresh_token, token_url: https://x/t, client_id: c}
`))
	for _, want := range []string{
		"profiles.public.credentials.app: a public app has no client secret",
		"token_store: required for microsoft365 app: public",
		"profiles.custom.credentials.provider: \"yahoo\" is not one of microsoft, google",
		"profiles.custom.credentials.tenant_id: required: authorize_url has a {tenant} placeholder",
		"admin.username: give username and password together",
		"admin.tls: required when admin.listen is not on loopback",
		"alerts.webhook_url: not an http(s) URL",
		"profiles.nowhere.credentials.authorize_url: required for grant refresh_token: where a person signs in",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in:\n%v", want, err)
		}
	}
}

// A token store is a file or a database, not both; a database's DSN is a
// secret (${env:…}) and never shown.
func TestTokenStoreIsAFileOrADatabase(t *testing.T) {
	const key = `"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="`
	profile := `
profiles:
  p:
    mailbox: me@example.com
    imap: {listen: "1143", upstream: {host: imap.example.com}}
    local_users: [{username: a, password: b}]
    credentials: {type: oauth2, token_url: https://x/t, client_id: c, client_secret: s}
`
	for doc, want := range map[string]string{
		"token_store: {path: /tmp/t.enc, postgres: \"postgres://u:pw@db/m\", key: " + key + "}": "token_store: path and postgres are both set: choose one",
		"token_store: {key: " + key + "}": "token_store.path: required: a file mailproxy may write (mode 0600), or token_store.postgres",
	} {
		_, err := Parse([]byte(doc + profile))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", doc, err, want)
		}
	}
	t.Setenv("CFG_TEST_DSN", "postgres://mailproxy:s3cret-pw@db.internal:5432/mailproxy")
	c, err := Parse([]byte("token_store: {postgres: \"${env:CFG_TEST_DSN}\", key: " + key + "}" + profile))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.TokenStore.Postgres.Value(); got != "postgres://mailproxy:s3cret-pw@db.internal:5432/mailproxy" {
		t.Fatalf("postgres resolved to %q", got)
	}
	if s := fmt.Sprintf("%v %+v %s", c.TokenStore, *c.TokenStore, c.TokenStore.Where()); strings.Contains(s, "s3cret-pw") {
		t.Fatalf("the DSN's password is shown: %s", s)
	}
}
