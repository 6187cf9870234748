package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Clients that ask for TLS by default (fetchmail 6.4: sslproto auto and
// sslcertck; mbsync: SSLType STARTTLS) work with the one setting the
// README names for each: with a listener certificate, the CA to trust;
// on loopback without one, log in without TLS.
func TestTLSByDefaultClientsWorkWithWhatTheREADMESays(t *testing.T) {
	need(t)
	for _, tool := range []string{"fetchmail", "mbsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run scripts/install-test-deps.sh", tool)
		}
	}
	plainIMAP, plainPOP3, tlsIMAP, tlsPOP3 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cert, key := filepath.Join(env.dir, "tls", "server.pem"), filepath.Join(env.dir, "tls", "server.key")
	withTLS := strings.NewReplacer(
		"    imap:\n      listen: "+tlsIMAP+"\n", fmt.Sprintf("    imap:\n      listen: %s\n      tls: {mode: starttls, cert_file: %s, key_file: %s}\n", tlsIMAP, cert, key),
		"    pop3:\n      listen: "+tlsPOP3+"\n", fmt.Sprintf("    pop3:\n      listen: %s\n      tls: {mode: starttls, cert_file: %s, key_file: %s}\n", tlsPOP3, cert, key),
	).Replace(receivingProfile("secured", tlsIMAP, tlsPOP3, gina, clientFor(gina)))
	startProxy(t, "profiles:\n"+receivingProfile("plain", plainIMAP, plainPOP3, gina, clientFor(gina))+withTLS,
		plainIMAP, plainPOP3, tlsIMAP, tlsPOP3)
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	esc := strings.ReplaceAll(localPass, `\`, `\\`)

	fetchmail := func(t *testing.T, addr, proto, extra string) {
		marker := uniqueMarker(t)
		stored := deliver(t, gina, messageWith(marker), marker)
		dir := t.TempDir()
		rc := filepath.Join(dir, "fetchmailrc")
		// The poll entry as fetchmail's documentation writes it, plus extra.
		os.WriteFile(rc, []byte(fmt.Sprintf(
			"set no bouncemail\npoll localhost port %s proto %s auth password\n  user %q password '%s' is root here\n  keep fetchall %s\n  mda \"/bin/sh -c 'cat > $(mktemp -p %s msg-XXXXXXXX)'\"\n",
			port(addr), proto, localUser, esc, extra, dir)), 0o600)
		cmd := exec.Command("fetchmail", "--nodetach", "--nosyslog", "-f", rc, "--idfile", filepath.Join(dir, "ids"), "--pidfile", filepath.Join(dir, "pid"))
		cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fetchmail (%s): %v\n%s", extra, err, out)
		}
		want := bytes.ReplaceAll(stored, []byte("\r\n"), []byte("\n"))
		for _, g := range readFetched(t, dir) {
			if bytes.Equal(fetchmailReceived.ReplaceAll(g, nil), want) {
				return
			}
		}
		t.Fatalf("fetchmail (%s) did not retrieve %s intact", extra, marker)
	}
	mbsync := func(t *testing.T, addr, extra string) {
		marker := uniqueMarker(t)
		deliver(t, gina, messageWith(marker), marker)
		dir := t.TempDir()
		rc := filepath.Join(dir, "mbsyncrc")
		os.WriteFile(rc, []byte(fmt.Sprintf(`IMAPAccount app
Host localhost
Port %s
User %s
Pass "%s"
%s

IMAPStore remote
Account app

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel inbox
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
`, port(addr), localUser, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(localPass), extra, dir, dir)), 0o600)
		cmd := exec.Command("mbsync", "-c", rc, "-a")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mbsync (%s): %v\n%s", extra, err, out)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "INBOX", "*", "*"))
		for _, f := range files {
			if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(marker)) {
				return
			}
		}
		t.Fatalf("mbsync (%s) did not fetch %s", extra, marker)
	}

	t.Run("fetchmail IMAP, certificate: sslcertfile", func(t *testing.T) { fetchmail(t, tlsIMAP, "IMAP", "sslcertfile "+env.ca) })
	t.Run("fetchmail POP3, certificate: sslcertfile", func(t *testing.T) { fetchmail(t, tlsPOP3, "POP3", "sslcertfile "+env.ca) })
	t.Run("fetchmail IMAP, loopback without certificate: sslproto ''", func(t *testing.T) { fetchmail(t, plainIMAP, "IMAP", "sslproto ''") })
	t.Run("fetchmail POP3, loopback without certificate: sslproto ''", func(t *testing.T) { fetchmail(t, plainPOP3, "POP3", "sslproto ''") })
	t.Run("mbsync, certificate: CertificateFile", func(t *testing.T) { mbsync(t, tlsIMAP, "CertificateFile "+env.ca) })
	t.Run("mbsync, loopback without certificate: SSLType None", func(t *testing.T) { mbsync(t, plainIMAP, "SSLType None") })
	// Without the setting, the refusal tells the person what to set.
	t.Run("fetchmail's default, no certificate: the reply says what to set", func(t *testing.T) {
		c := dialRaw(t, plainPOP3)
		c.send("STLS\r\n")
		if l := c.line(); !strings.Contains(l, "fetchmail sslproto ''") {
			t.Fatalf("STLS refused with %q", l)
		}
	})
}
