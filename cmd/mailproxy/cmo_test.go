package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"mailproxy/config"
)

const cmoWebConfig = `<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <appSettings>
    <add key="Mail.Sending.Smtp.Server" value="smtp.contoso.com:587" />
    <add key="Mail.Sending.Smtp.UseAuth" value="True" />
    <add key="Mail.Sending.Smtp.Login" value="cmo@contoso.com" />
    <add key="Mail.Sending.Smtp.Password" value="R&amp;D-2024" />
    <add key="Mail.Receiving.ServerType" value="Microsoft365" />
    <add key="Mail.Receiving.Microsoft365.IntegrationType" value="Public" />
    <add key="Mail.Receiving.Microsoft365.PublicApp.ClientId" value="7e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b" />
    <add key="Mail.Receiving.Microsoft365.PublicApp.TenantId" value="contoso.onmicrosoft.com" />
    <add key="Mail.Receiving.Microsoft365.PublicApp.AccountName" value="in@contoso.com" />
  </appSettings>
</configuration>
`

func runCMO(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"config", "import-cmo"}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestImportCMOCommand(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "web.config")
	if err := os.WriteFile(in, []byte(cmoWebConfig), 0o644); err != nil {
		t.Fatal(err)
	}

	// To stdout: the YAML alone; the rest on stderr.
	code, stdout, stderr := runCMO(t, in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	t.Setenv("STATE_DIRECTORY", "/var/lib/mailproxy")
	cfg, err := config.Decode([]byte(stdout))
	if err != nil {
		t.Fatalf("stdout does not decode: %v\n%s", err, stdout)
	}
	if cfg.Profiles["receiving"].Credentials.App != config.AppPublic || cfg.Profiles["sending"].SMTP.Upstream.Host != "smtp.contoso.com:587" {
		t.Errorf("profiles %+v", cfg.Profiles)
	}
	for _, want := range []string{
		"MAILPROXY_SENDING_PASSWORD", "MAILPROXY_STORE_KEY", "mailproxy key generate",
		`<add key="Mail.Sending.Smtp.Server" value="127.0.0.1:2525" />`,
		`<add key="Mail.Receiving.ServerType" value="IMAP" />`,
		"mailproxy token add receiving", "DPAPI",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stdout+stderr, "R&D-2024") {
		t.Error("a secret of web.config is in the output")
	}

	// -o and -env: files of mode 0600, even over a file that was not.
	out, env := filepath.Join(dir, "mailproxy.yaml"), filepath.Join(dir, "mailproxy.env")
	os.WriteFile(out, []byte("old"), 0o644)
	code, stdout, stderr = runCMO(t, "-o", out, "-env", env, in)
	if code != 0 || stdout != "" {
		t.Fatalf("exit %d, stdout %q: %s", code, stdout, stderr)
	}
	for _, f := range []string{out, env} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	if yml, _ := os.ReadFile(out); !bytes.Contains(yml, []byte("profiles:")) {
		t.Errorf("-o wrote %q", yml)
	}
	envText, _ := os.ReadFile(env)
	for _, re := range []string{
		`(?m)^MAILPROXY_SENDING_PASSWORD='R&D-2024'$`,                // XML decoded
		`(?m)^MAILPROXY_SENDING_LOCAL_PASSWORD='[A-Za-z0-9_-]{24}'$`, // new
		`(?m)^MAILPROXY_RECEIVING_LOCAL_PASSWORD='[A-Za-z0-9_-]{24}'$`,
		`(?m)^MAILPROXY_STORE_KEY='[A-Za-z0-9+/]{43}='$`,
	} {
		if !regexp.MustCompile(re).Match(envText) {
			t.Errorf("-env file lacks %s:\n%s", re, envText)
		}
	}
	if !strings.Contains(stderr, "Wrote the configuration to "+out) || !strings.Contains(stderr, "Wrote the variables to "+env) {
		t.Errorf("stderr: %s", stderr)
	}
}

func TestImportCMOCommandFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "web.config")
	os.WriteFile(bad, []byte(strings.Replace(cmoWebConfig, `<add key="Mail.Receiving.Microsoft365.IntegrationType" value="Public" />`, "", 1)), 0o644)
	code, stdout, stderr := runCMO(t, bad)
	if code != 1 || !strings.Contains(stderr, "Mail.Receiving.Microsoft365.IntegrationType: required") ||
		!strings.Contains(stderr, "1 problem(s)") || !strings.Contains(stdout, "profiles:") {
		t.Errorf("a missing mandatory key: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCMO(t, filepath.Join(dir, "missing")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("a missing file: exit %d %s", code, stderr)
	}
	notXML := filepath.Join(dir, "broken.config")
	os.WriteFile(notXML, []byte("<configuration><appSettings>"), 0o644)
	if code, _, stderr := runCMO(t, notXML); code != 1 || !strings.Contains(stderr, "not a web.config") {
		t.Errorf("broken XML: exit %d %s", code, stderr)
	}
	for _, args := range [][]string{{}, {"a", "b"}, {"-x", bad}} {
		if code, _, _ := runCMO(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", args, code)
		}
	}
}

func TestEnvTextLeavesUnquotableValuesToAPerson(t *testing.T) {
	text, hand := envText([]config.CMOVar{
		{Name: "A", Kind: config.CMOFromWebConfig, Holds: "a", Value: config.NewSecret("it's")},
		{Name: "B", Kind: config.CMOFromWebConfig, Holds: "b", Value: config.NewSecret(`x"$y\z`)},
	})
	if len(hand) != 1 || hand[0] != "A" || strings.Contains(text, "it's") || !strings.Contains(text, `B='x"$y\z'`) {
		t.Errorf("%q %s", hand, text)
	}
}
