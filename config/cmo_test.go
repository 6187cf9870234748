package config

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/cmo")

// cmoCases are the inputs under testdata/cmo: NAME.web.config or NAME.txt,
// with NAME.yaml (the configuration) and NAME.report (the text for a
// person) beside them.
func cmoCases(t *testing.T) map[string]string {
	t.Helper()
	cases := map[string]string{}
	for _, pattern := range []string{"*.web.config", "*.txt"} {
		files, err := filepath.Glob(filepath.Join("testdata", "cmo", pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".txt"), ".web.config")
			cases[name] = f
		}
	}
	if len(cases) == 0 {
		t.Fatal("no input under testdata/cmo")
	}
	return cases
}

func importCMOFile(t *testing.T, path string) *CMOImport {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	imp, err := ImportCMO(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return imp
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./config -run CMO -update writes it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (go test ./config -run CMO -update rewrites it); got:\n%s", path, got)
	}
}

func TestImportCMOGolden(t *testing.T) {
	for name, in := range cmoCases(t) {
		t.Run(name, func(t *testing.T) {
			imp := importCMOFile(t, in)
			base := filepath.Join("testdata", "cmo", name)
			golden(t, base+".yaml", imp.YAML)
			golden(t, base+".report", []byte(imp.Report()))
		})
	}
}

// Every input that has no problem gives a configuration mailproxy
// accepts, with its secrets as references (Decode does not resolve them).
func TestImportCMODecodes(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/mailproxy") // graph.state_dir's default, whatever the machine
	for name, in := range cmoCases(t) {
		t.Run(name, func(t *testing.T) {
			imp := importCMOFile(t, in)
			if len(imp.Problems) > 0 {
				t.Skipf("has problems, as it should: %q", imp.Problems)
			}
			cfg, err := Decode(imp.YAML)
			if err != nil {
				t.Fatalf("does not decode:\n%v\n%s", err, imp.YAML)
			}
			secrets, _ := cfg.references()
			for _, s := range secrets {
				if s.s.IsSet() && !strings.HasPrefix(s.s.ref, "${env:") {
					t.Errorf("%s is not an ${env:…} reference", s.path)
				}
			}
			vars := map[string]bool{}
			for _, v := range imp.Vars {
				vars[v.Name] = true
			}
			for _, s := range secrets {
				if s.s.IsSet() && !vars[strings.TrimSuffix(strings.TrimPrefix(s.s.ref, "${env:"), "}")] {
					t.Errorf("%s reads %s, which Vars does not list", s.path, s.s.ref)
				}
			}
		})
	}
}

// No secret of web.config reaches the YAML or the report.
func TestImportCMOKeepsSecretsOut(t *testing.T) {
	for name, in := range cmoCases(t) {
		imp := importCMOFile(t, in)
		for _, v := range imp.Vars {
			if v.Kind != CMOFromWebConfig {
				continue
			}
			if v.Value.Value() == "" {
				t.Errorf("%s: %s has no value", name, v.Name)
			}
			if strings.Contains(string(imp.YAML), v.Value.Value()) || strings.Contains(imp.Report(), v.Value.Value()) {
				t.Errorf("%s: the value of %s is in the output", name, v.Name)
			}
		}
	}
}

// What the golden files say, decoded: inheritance gives each mailbox what
// CMO gives it.
func TestImportCMOMeaning(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/mailproxy")
	decode := func(t *testing.T, name string) (*CMOImport, *Config) {
		t.Helper()
		in := cmoCases(t)[name]
		imp := importCMOFile(t, in)
		cfg, err := Decode(imp.YAML)
		if err != nil {
			t.Fatalf("%v\n%s", err, imp.YAML)
		}
		return imp, cfg
	}
	t.Run("smtp-google-p12", func(t *testing.T) {
		_, cfg := decode(t, "smtp-google-p12")
		p := cfg.Profiles["sending"]
		c := p.Credentials
		if c.Type != CredGoogleServiceAccount || c.KeyFile != `C:\CMO\Keys\cmo-mail-4f2a9c.p12` ||
			c.ServiceAccount != "cmo-mail@cmo-prod-381207.iam.gserviceaccount.com" || c.Impersonate != "cmo@contoso.com" {
			t.Errorf("credentials %+v", c)
		}
		u := p.SMTP.Upstream
		if u.Host != "smtp.gmail.com:465" || u.TLS != TLSImplicit || u.MessagesPerSession != 10 || u.Mechanism != "xoauth2" {
			t.Errorf("upstream %+v", u)
		}
		if p.SMTP.LocalAuth != LocalAuthPassword || len(p.LocalUsers) != 1 || p.LocalUsers[0].Username != "cmo-sending" {
			t.Errorf("local login %+v %+v", p.SMTP, p.LocalUsers)
		}
	})
	t.Run("m365-confidential", func(t *testing.T) {
		_, cfg := decode(t, "m365-confidential")
		p := cfg.Profiles["sending"]
		if p.Graph == nil || p.Graph.User != "5f0c5c8e-1d2b-4c3a-9e8f-7a6b5c4d3e2f" || p.Credentials.App != AppConfidential ||
			p.Credentials.TenantID != "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d" || !p.Credentials.ClientSecret.IsSet() {
			t.Errorf("%+v %+v", p.Graph, p.Credentials)
		}
	})
	t.Run("imap-newaction-google", func(t *testing.T) {
		_, cfg := decode(t, "imap-newaction-google")
		r, n := cfg.Profiles["receiving"], cfg.Profiles["new-action"]
		if r.Credentials.Type != CredBasic || r.IMAP.Upstream.Host != "mail.contoso.com:993" || r.IMAP.Listen != "127.0.0.1:1143" {
			t.Errorf("receiving %+v %+v", r.Credentials, r.IMAP)
		}
		c := n.Credentials
		if c.Type != CredGoogleServiceAccount || c.Username != "" || c.Password.IsSet() || c.Impersonate != "actions@contoso.com" {
			t.Errorf("new-action credentials %+v", c)
		}
		// TLS is Mail.Receiving's: NewAction cannot say it.
		if n.IMAP.Upstream.Host != "imap.gmail.com:993" || n.IMAP.Upstream.TLS != TLSImplicit || n.IMAP.Upstream.Mechanism != "xoauth2" ||
			n.IMAP.Listen != "127.0.0.1:1144" || n.Mailbox != "actions@contoso.com" || n.LocalUsers[0].Username != "cmo-new-action" {
			t.Errorf("new-action %+v %+v", n.IMAP, n)
		}
	})
	t.Run("documentimport-m365-public", func(t *testing.T) {
		imp, cfg := decode(t, "documentimport-m365-public")
		r, d := cfg.Profiles["receiving"], cfg.Profiles["document-import"]
		if r.Graph.User != "c0ffee00-1234-4abc-8def-0123456789ab" || r.Credentials.App != AppConfidential || r.IMAP == nil {
			t.Errorf("receiving %+v %+v", r.Graph, r.Credentials)
		}
		c := d.Credentials
		if c.App != AppPublic || c.ClientSecret.IsSet() || c.Account != "scans@contoso.com" || c.ClientID != "7e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b" ||
			d.Graph.User != "scans@contoso.com" || d.IMAP.Listen != "127.0.0.1:1145" {
			t.Errorf("document-import %+v %+v", d.Graph, c)
		}
		if cfg.TokenStore == nil || cfg.TokenStore.Key.ref != "${env:MAILPROXY_STORE_KEY}" {
			t.Errorf("token store %+v", cfg.TokenStore)
		}
		if len(imp.SignIns) != 1 || !strings.HasPrefix(imp.SignIns[0], "mailproxy token add document-import ") {
			t.Errorf("sign-ins %q", imp.SignIns)
		}
	})
	t.Run("plain-list", func(t *testing.T) {
		imp, cfg := decode(t, "plain-list")
		s, r := cfg.Profiles["sending"], cfg.Profiles["receiving"]
		if s.SMTP.LocalAuth != LocalAuthNone || len(s.LocalUsers) != 0 || s.SMTP.Upstream.Host != "relay.contoso.com:25" || s.SMTP.Upstream.TLS != TLSStartTLS {
			t.Errorf("sending %+v", s.SMTP)
		}
		if r.POP3 == nil || r.POP3.Upstream.Host != "pop.contoso.com:995" || r.POP3.Listen != "127.0.0.1:1110" {
			t.Errorf("receiving %+v", r.POP3)
		}
		if v := varValue(imp, "MAILPROXY_SENDING_PASSWORD"); v != "p&ss=word" {
			t.Errorf("password %q: a plain list is taken as it is", v)
		}
	})
	t.Run("entities", func(t *testing.T) {
		imp, cfg := decode(t, "entities")
		if v := varValue(imp, "MAILPROXY_SENDING_PASSWORD"); v != `R&D<2024>"x"` {
			t.Errorf("sending password %q", v)
		}
		if v := varValue(imp, "MAILPROXY_RECEIVING_PASSWORD"); v != "café&crème" {
			t.Errorf("receiving password %q: the last one given, decoded", v)
		}
		if u := cfg.Profiles["sending"].Credentials.Username; u != "o'brien@contoso.com" {
			t.Errorf("login %q", u)
		}
		if r := cfg.Profiles["receiving"].IMAP.Upstream; r.Host != "imap.contoso.com:143" || r.TLS != TLSStartTLS {
			t.Errorf("UseSSL False: %+v", r)
		}
	})
}

func varValue(imp *CMOImport, name string) string {
	for _, v := range imp.Vars {
		if v.Name == name {
			return v.Value.Value()
		}
	}
	return ""
}

// Each problem is one line that names the key.
func TestImportCMOProblems(t *testing.T) {
	for _, c := range []struct {
		name string
		want []string // key each problem starts with
	}{
		{"missing-mandatory", []string{"Mail.Sending.Microsoft365.IntegrationType:", "Mail.Receiving.Imap.Password:"}},
		{"bad-values", []string{
			"Mail.Sending.Smtp.UseSsl:", "Mail.Sending.Smtp.Port:", "Mail.Sending.Smtp.NumberOfMessagesPerSession:",
			"Mail.Sending.Smtp.GoogleOAuth2.CertificatePath:", "Mail.Sending.Smtp.Login:", "Mail.Receiving.ServerType:",
		}},
	} {
		imp := importCMOFile(t, cmoCases(t)[c.name])
		var got []string
		for _, p := range imp.Problems {
			if strings.Contains(p, "\n") {
				t.Errorf("%s: %q is more than one line", c.name, p)
			}
			key, _, _ := strings.Cut(p, " ")
			got = append(got, key)
		}
		slices.Sort(got)
		slices.Sort(c.want)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: problems %q, want keys %q", c.name, imp.Problems, c.want)
		}
	}
}

func TestImportCMOInputs(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
	}{
		{"bare add lines", `<add key="Mail.Sending.Smtp.Server" value="relay.contoso.com" /><add key="Mail.Sending.Smtp.Login" value="a@b" />`, true},
		{"BOM and CRLF", "\xEF\xBB\xBFMail.Sending.Smtp.Server=relay.contoso.com\r\nMail.Sending.Smtp.Login=a@b\r\n", true},
		{"UTF-16", "", true},
		{"broken XML", `<configuration><appSettings><add key="a" value="b"></configuration>`, false},
		{"not key=value", "just some text\n", false},
		{"other encoding", `<?xml version="1.0" encoding="windows-1252"?><configuration/>`, false},
	} {
		in := []byte(c.in)
		if c.name == "UTF-16" {
			in = []byte{0xFF, 0xFE}
			for _, r := range `<?xml version="1.0" encoding="utf-16"?><configuration><appSettings><add key="Mail.Sending.Smtp.Server" value="relay.contoso.com"/><add key="Mail.Sending.Smtp.Login" value="a@b"/></appSettings></configuration>` {
				in = append(in, byte(r), 0)
			}
		}
		imp, err := ImportCMO(in)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.name, err)
			continue
		}
		if c.ok && !strings.Contains(string(imp.YAML), "relay.contoso.com:25") {
			t.Errorf("%s: the server is not in\n%s", c.name, imp.YAML)
		}
	}
	imp, err := ImportCMO([]byte("webpages:Version=3.0.0.0\n"))
	if err != nil || len(imp.Problems) != 1 || imp.YAML != nil {
		t.Errorf("nothing to import: %v %q", err, imp.Problems)
	}
}

// An inheriting profile states what differs from its parent, and clears
// what its parent sets and it must not have.
func TestYdiff(t *testing.T) {
	m := func(kv ...any) *ymap {
		y := &ymap{}
		for i := 0; i < len(kv); i += 2 {
			y.set(kv[i].(string), kv[i+1], "")
		}
		return y
	}
	parent := m("mailbox", "a", "imap", m("listen", "1143", "upstream", m("host", "h:993", "tls", "implicit")),
		"credentials", m("type", "basic", "username", "a", "password", "${env:A}"), "n", 3)
	child := m("mailbox", "b", "imap", m("listen", "1144", "upstream", m("host", "h:993", "tls", "implicit")),
		"credentials", m("type", "google_service_account", "key_file", "k.p12"), "n", 3)
	d := ydiff(parent, child)
	want := m("mailbox", "b", "imap", m("listen", "1144"),
		"credentials", m("type", "google_service_account", "key_file", "k.p12", "username", "", "password", ""))
	if !yequal(d, want) {
		t.Errorf("got %+v", d.entries)
	}
	if d := ydiff(m("x", 1, "y", m("z", 2)), m("y", m())); !yequal(d, m("y", m("z", nil), "x", nil)) {
		t.Errorf("non-strings clear to null: %+v", d.entries)
	}
}
