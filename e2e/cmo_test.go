package e2e

// A CMO web.config imported with mailproxy config import-cmo runs as it
// is written, against the real Postfix and Dovecot.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImportedWebConfigSendsAndReceives(t *testing.T) {
	need(t)
	dir := t.TempDir()
	web := filepath.Join(dir, "web.config")
	// Basic auth both ways (Dovecot's passwd-file: user-pw). The mail goes
	// to carol, whose mailbox tests search by marker (the POP3 tests count
	// erin's).
	os.WriteFile(web, []byte(fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <appSettings>
    <add key="Mail.Sending.ServerType" value="Smtp" />
    <add key="Mail.Sending.Smtp.Server" value="localhost:%d" />
    <add key="Mail.Sending.Smtp.UseSsl" value="False" />
    <add key="Mail.Sending.Smtp.UseAuth" value="True" />
    <add key="Mail.Sending.Smtp.AuthType" value="BasicAuth" />
    <add key="Mail.Sending.Smtp.Login" value="%s" />
    <add key="Mail.Sending.Smtp.Password" value="bob-pw" />
    <add key="Mail.Sending.Smtp.NumberOfMessagesPerSession" value="2" />
    <add key="Mail.Receiving.ServerType" value="IMAP" />
    <add key="Mail.Receiving.Imap.Server" value="localhost:%d" />
    <add key="Mail.Receiving.Imap.UseSSL" value="True" />
    <add key="Mail.Receiving.Imap.AuthType" value="BasicAuth" />
    <add key="Mail.Receiving.Imap.Login" value="%s" />
    <add key="Mail.Receiving.Imap.Password" value="carol-pw" />
    <add key="Some.Other.App.Setting" value="left to CMO" />
  </appSettings>
</configuration>
`, env.subPort, bob, imapsPort(), carol)), 0o600)
	cfg, envFile := filepath.Join(dir, "mailproxy.yaml"), filepath.Join(dir, "mailproxy.env")
	out, err := exec.Command(env.bin, "config", "import-cmo", "-o", cfg, "-env", envFile, web).CombinedOutput()
	if err != nil {
		t.Fatalf("import-cmo: %v\n%s", err, out)
	}
	report := string(out)
	for _, want := range []string{"MAILPROXY_SENDING_PASSWORD", "MAILPROXY_RECEIVING_LOCAL_PASSWORD", `<add key="Mail.Sending.Smtp.Server" value="127.0.0.1:2525" />`} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %s:\n%s", want, report)
		}
	}
	// What the test changes, and a user would not: the ports (the defaults
	// may be taken here) and the test servers' private CA.
	smtpAddr, imapAddr := freeAddr(t), freeAddr(t)
	y, _ := os.ReadFile(cfg)
	s := strings.NewReplacer("127.0.0.1:2525", smtpAddr, "127.0.0.1:1143", imapAddr).Replace(string(y))
	s = strings.ReplaceAll(s, "        tls: ", "        ca_file: "+env.ca+"\n        tls: ")
	os.WriteFile(cfg, []byte(s), 0o600)
	vars := map[string]string{}
	data, _ := os.ReadFile(envFile)
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	for k, v := range vars {
		t.Setenv(k, v) // the variables the import asks for, as systemd's EnvironmentFile= would set them
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("configuration:\n%s", s)
		}
	})
	startProxyFile(t, cfg, smtpAddr, imapAddr)

	// CMO sends with the local login the report gave it (swaks as the app).
	marker := uniqueMarker(t)
	msg := filepath.Join(dir, "msg.eml")
	os.WriteFile(msg, messageWith(marker), 0o600)
	if out, err := exec.Command("swaks", "--server", smtpAddr, "--from", bob, "--to", carol, "--auth", "PLAIN",
		"--auth-user", "cmo-sending", "--auth-password", vars["MAILPROXY_SENDING_LOCAL_PASSWORD"], "--data", "@"+msg).CombinedOutput(); err != nil {
		t.Fatalf("swaks through the imported configuration: %v\n%s", err, out)
	}
	stored := waitForMessage(t, carol, marker)
	// ... and reads it back over IMAP with imaplib.
	host, port, _ := net.SplitHostPort(imapAddr)
	got := filepath.Join(dir, "got.eml")
	runPy(t, "imapclient.py", host, port, "cmo-receiving", vars["MAILPROXY_RECEIVING_LOCAL_PASSWORD"], "quoted", "fetch", marker, got)
	b, _ := os.ReadFile(got)
	sameBytes(t, "the message read back through the imported configuration", b, stored)
}
