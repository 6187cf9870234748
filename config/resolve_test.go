package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKey is a valid token_store.key.
var testKey = base64.StdEncoding.EncodeToString(make([]byte, 32))

func TestDecodeValidatesWithoutResolvingAndResolveReadsEverything(t *testing.T) {
	dir := t.TempDir()
	doc := fmt.Sprintf(`token_store: {path: %s, key: "${env:CFG_TEST_UNSET_KEY}"}
admin:
  listen: 127.0.0.1:8025
  token: file:%[2]s/admin-token
  tls: {cert_file: %[2]s/admin.crt, key_file: %[2]s/admin.key}
alerts: {webhook_url: "${env:CFG_TEST_HOOK}"}
profiles:
  a:
    mailbox: a@x
    smtp:
      listen: "2525"
      tls: {mode: starttls, cert_file: %[2]s/smtp.crt, key_file: %[2]s/smtp.key}
      upstream: {host: h, ca_file: %[2]s/ca.pem}
    local_users:
      - username: u
        password: file:%[2]s/pw
    credentials: {type: basic, password: "${env:CFG_TEST_UNSET}"}
  m:
    mailbox: m@x
    imap: {listen: "1143", upstream: {host: h}}
    local_users: [{username: v, password: inline}]
    credentials: {type: microsoft365, tenant_id: t, client_id: c, certificate_file: %[2]s/cert.pfx}
  g:
    mailbox: g@x
    pop3: {listen: "1110", upstream: {host: h}}
    local_users: [{username: w, password: inline}]
    credentials: {type: google_service_account, key_file: %[2]s/sa.json}
`, filepath.Join(dir, "missing", "tokens.enc"), dir)
	t.Setenv("CFG_TEST_HOOK", "ftp://hooks")
	cfg, err := Decode([]byte(doc))
	if err != nil {
		t.Fatalf("Decode must not read secrets or files: %v", err)
	}
	if cfg.Profiles["m"].LocalUsers[0].Password.Value() != "" {
		t.Error("Decode resolved a secret")
	}
	want := []string{
		"line 1: token_store.key: environment variable CFG_TEST_UNSET_KEY is not set",
		fmt.Sprintf("line 1: token_store.path: directory %s does not exist: create it (mode 0700)", filepath.Join(dir, "missing")),
		fmt.Sprintf("line %d: admin.token: cannot read secret file", lineNo(t, doc, "admin-token")),
		fmt.Sprintf("line %d: admin.tls.cert_file: cannot read %s/admin.crt: no such file", lineNo(t, doc, "admin.crt"), dir),
		"admin.tls.key_file: cannot read",
		"alerts.webhook_url: not an http(s) URL",
		fmt.Sprintf("line %d: profiles.a.smtp.tls.cert_file: cannot read %s/smtp.crt", lineNo(t, doc, "smtp.crt"), dir),
		"profiles.a.smtp.tls.key_file: cannot read",
		fmt.Sprintf("line %d: profiles.a.smtp.upstream.ca_file: cannot read %s/ca.pem", lineNo(t, doc, "ca.pem"), dir),
		fmt.Sprintf("line %d: profiles.a.local_users[0].password: cannot read secret file", lineNo(t, doc, "/pw")),
		"profiles.a.credentials.password: environment variable CFG_TEST_UNSET is not set",
		"profiles.m.credentials.certificate_file: cannot read",
		"profiles.g.credentials.key_file: cannot read",
	}
	wantProblems(t, cfg.Resolve(), want...)
	// Parse is Decode and Resolve: every problem of both at once.
	_, err = Parse([]byte(strings.Replace(doc, "mailbox: a@x", "mailbox: ''", 1)))
	wantProblems(t, err, append(want, "profiles.a.mailbox: required")...)

	for _, f := range []string{"admin-token", "admin.crt", "admin.key", "smtp.crt", "smtp.key", "ca.pem", "pw", "cert.pfx", "sa.json"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600)
	}
	os.Mkdir(filepath.Join(dir, "missing"), 0o700)
	t.Setenv("CFG_TEST_UNSET_KEY", testKey)
	t.Setenv("CFG_TEST_UNSET", "upstream-pw")
	t.Setenv("CFG_TEST_HOOK", "https://hooks")
	if err := cfg.Resolve(); err != nil {
		t.Fatal(err)
	}
	if v := cfg.Profiles["a"].Credentials.Password.Value(); v != "upstream-pw" {
		t.Errorf("password = %q", v)
	}
	if v := cfg.Profiles["m"].LocalUsers[0].Password.Value(); v != "inline" {
		t.Errorf("inline password = %q", v)
	}
	if v := cfg.Admin.Token.Value(); v != "x" {
		t.Errorf("admin token = %q", v)
	}
}

func TestValidateIsPure(t *testing.T) {
	// An inline webhook URL is checked without resolving anything.
	_, err := Decode([]byte(`alerts: {webhook_url: "ftp://x"}
profiles:
  a:
    mailbox: a@x
    smtp: {listen: "2525", upstream: {host: h}}
    local_users: [{username: u, password: "${env:CFG_TEST_UNSET}"}]
    credentials: {type: basic, password: file:/nonexistent/pw}
`))
	wantProblems(t, err, "line 1: alerts.webhook_url: not an http(s) URL")
	if strings.Contains(err.Error(), "CFG_TEST_UNSET") || strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("Decode resolved secrets: %v", err)
	}
}

func TestTokenStoreKeyMustBe32Base64Bytes(t *testing.T) {
	const msg = "token_store.key: must be 32 random bytes, base64 encoded: make one with mailproxy key generate"
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "store.key")
	os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600)
	for _, tc := range []struct {
		key  string
		want string // "" for none
	}{
		{testKey, ""},
		{" " + testKey + " ", ""},
		{"file:" + keyFile, ""},
		{"k", msg + " (this one is not base64)"},
		{"not base64!", msg + " (this one is not base64)"},
		{base64.RawStdEncoding.EncodeToString(make([]byte, 32)), msg + " (this one is not base64)"},
		{base64.StdEncoding.EncodeToString(make([]byte, 16)), msg + " (this one is 16 bytes)"},
		{base64.StdEncoding.EncodeToString(make([]byte, 33)), msg + " (this one is 33 bytes)"},
	} {
		_, err := Parse([]byte(fmt.Sprintf(`token_store: {path: %s/tokens.enc, key: %q}
profiles:
  a:
    mailbox: a@x
    smtp: {listen: "2525", local_auth: none, upstream: {host: h}}
    credentials: {type: basic, password: pw}
`, dir, tc.key)))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("key %q: %v", tc.key, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), "line 1: "+tc.want)):
			t.Errorf("key %q: %v, want %q", tc.key, err, tc.want)
		}
	}
}

func TestCheckStoreDirAndEnsureStoreDir(t *testing.T) {
	dir := t.TempDir()
	if err := CheckStoreDir(filepath.Join(dir, "tokens.enc")); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %v", left)
	}

	missing := filepath.Join(dir, "a", "b")
	err := CheckStoreDir(filepath.Join(missing, "tokens.enc"))
	if want := "directory " + missing + " does not exist: create it (mode 0700)"; err == nil || err.Error() != want {
		t.Errorf("missing directory: %v, want %q", err, want)
	}
	if err := EnsureStoreDir(filepath.Join(missing, "tokens.enc")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("EnsureStoreDir made %v (%v), want a directory of mode 0700", fi.Mode(), err)
	}
	if err := CheckStoreDir(filepath.Join(missing, "tokens.enc")); err != nil {
		t.Error(err)
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	err = CheckStoreDir(filepath.Join(file, "tokens.enc"))
	if want := "cannot write in " + file + ": not a directory"; err == nil || err.Error() != want {
		t.Errorf("a file as the directory: %v, want %q", err, want)
	}
	if err := EnsureStoreDir(filepath.Join(file, "sub", "tokens.enc")); err == nil || !strings.Contains(err.Error(), "cannot create directory "+filepath.Join(file, "sub")) {
		t.Errorf("EnsureStoreDir under a file: %v", err)
	}

	if os.Geteuid() == 0 {
		t.Log("root writes in read-only directories: skipping that case")
		return
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o500)
	t.Cleanup(func() { os.Chmod(ro, 0o700) })
	err = CheckStoreDir(filepath.Join(ro, "tokens.enc"))
	if want := "cannot write in " + ro + ": "; err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("read-only directory: %v, want %q...", err, want)
	}
}
