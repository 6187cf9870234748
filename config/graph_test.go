package config

import (
	"strings"
	"testing"
)

func TestGraphProfileDefaults(t *testing.T) {
	cfg, err := Decode([]byte(`
token_store: {path: /tmp/t.enc, key: k}
profiles:
  app-only:
    mailbox: cmo@contoso.com
    graph: {}
    smtp: {listen: 2525}
    pop3: {listen: 1110}
    local_users: [{username: cmo, password: pw}]
    credentials: {type: microsoft365, tenant_id: t, client_id: c, client_secret: s}
  delegated:
    mailbox: person@contoso.com
    graph: {user: 5f0c5c8e-0000-0000-0000-000000000001, endpoint: "https://graph.microsoft.us/v1.0/"}
    smtp: {listen: 2526}
    local_users: [{username: p, password: pw}]
    credentials: {type: microsoft365, app: public, tenant_id: t, client_id: c}
  generic:
    mailbox: g@contoso.com
    graph: {}
    smtp: {listen: 2527}
    local_users: [{username: g, password: pw}]
    credentials: {type: oauth2, provider: microsoft, tenant_id: t, client_id: c, refresh_token: rt}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Profiles["app-only"]
	if a.Graph.User != "cmo@contoso.com" || a.Graph.Endpoint != DefaultGraphEndpoint || strings.Join(a.Credentials.Scopes, " ") != DefaultGraphScope {
		t.Fatalf("app-only: %+v %v", a.Graph, a.Credentials.Scopes)
	}
	if a.Graph.StateDir != DefaultGraphStateDir() || a.Graph.PollInterval.D() != DefaultGraphPollInterval || a.Graph.CacheMB != 512 {
		t.Fatalf("app-only state: %+v", a.Graph)
	}
	if a.SMTP.MaxMessageBytes != 35<<20 || a.SMTP.Upstream.Host != "" || a.POP3.Folder != "inbox" || a.POP3.Dele != DeleMove {
		t.Fatalf("app-only listeners: %+v %+v", a.SMTP, a.POP3)
	}
	d := cfg.Profiles["delegated"]
	if d.Graph.Endpoint != "https://graph.microsoft.us/v1.0" || !strings.Contains(strings.Join(d.Credentials.Scopes, " "), "https://graph.microsoft.com/Mail.Send") {
		t.Fatalf("delegated: %+v %v", d.Graph, d.Credentials.Scopes)
	}
	if g := cfg.Profiles["generic"]; !strings.Contains(strings.Join(g.Credentials.Scopes, " "), "Mail.ReadWrite") || g.Credentials.Grant != GrantRefreshToken {
		t.Fatalf("generic: %v %s", g.Credentials.Scopes, g.Credentials.Grant)
	}
}

func TestGraphStateDirDefault(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/mailproxy:/var/lib/other")
	if d := DefaultGraphStateDir(); d != "/var/lib/mailproxy/graph" {
		t.Errorf("systemd: %s", d)
	}
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", "/home/u/.state")
	if d := DefaultGraphStateDir(); d != "/home/u/.state/mailproxy/graph" {
		t.Errorf("xdg: %s", d)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d := DefaultGraphStateDir(); d != "/home/u/.local/state/mailproxy/graph" {
		t.Errorf("home: %s", d)
	}
}

func TestGraphProfileProblems(t *testing.T) {
	_, err := Decode([]byte(`
profiles:
  base:
    mailbox: a@contoso.com
    smtp: {listen: 2525, upstream: {host: smtp.office365.com}}
    local_users: [{username: a, password: pw}]
    credentials: {type: basic, password: pw}
  both:
    inherit: base
    graph: {endpoint: "http://graph.example.com/v1.0", state_dir: state, poll_interval: 100ms}
    smtp: {listen: 2526}
    imap: {listen: 1143}
    pop3: {listen: 1110, dele: shred}
    local_users: [{username: b, password: pw}]
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"profiles.both.smtp.upstream: a profile with graph: talks to Microsoft Graph, not to a mail server",
		`profiles.both.graph.state_dir: "state" is not an absolute path`,
		"profiles.both.graph.poll_interval: 100ms is too short",
		"profiles.both.graph.endpoint: http://graph.example.com/v1.0 is not https",
		"profiles.both.credentials.type: basic gives no token",
		`profiles.both.pop3.dele: "shred" is not one of move`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "profiles.base") {
		t.Errorf("the parent is fine:\n%v", err)
	}
	_, err = Decode([]byte(`
profiles:
  mail:
    mailbox: a@contoso.com
    pop3: {listen: 1110, folder: archive, upstream: {host: outlook.office365.com}}
    local_users: [{username: a, password: pw}]
    credentials: {type: basic, password: pw}
`))
	if err == nil || !strings.Contains(err.Error(), "profiles.mail.pop3: folder and dele are for profiles with graph") {
		t.Fatalf("folder without graph: %v", err)
	}
}
