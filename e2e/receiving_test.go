package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"mailproxy/idp"
)

// A second local login of the receiving profiles: 8-bit, quotes,
// backslash and spaces.
const (
	localUser8 = "app8"
	localPass8 = `pä"ss\ wörd ü`
)

// clientFor registers a client-credentials client whose tokens are good
// for mailbox, and returns its credentials block.
func clientFor(mailbox string) string {
	id := "client-" + strings.Split(mailbox, "@")[0]
	env.idp.AddClient(idp.Client{ID: id, Secret: id + "-secret", Mailbox: mailbox})
	return fmt.Sprintf("      type: oauth2\n      token_url: %s/token\n      client_id: %s\n      client_secret: %s\n", env.idpURL, id, id+"-secret")
}

// receivingProfile is a profile reading mailbox over IMAP (listen imapAddr)
// and POP3 (listen pop3Addr), both upstreams on implicit TLS; an empty
// address leaves that protocol out.
func receivingProfile(name, imapAddr, pop3Addr, mailbox, creds string) string {
	return receivingProfileTLS(name, imapAddr, pop3Addr, mailbox, creds, "implicit")
}

// receivingProfileTLS is receivingProfile with upstream tls "implicit"
// (Dovecot's IMAPS/POP3S ports) or "starttls" (IMAP/POP3 ports).
func receivingProfileTLS(name, imapAddr, pop3Addr, mailbox, creds, tlsMode string) string {
	imapP, pop3P := imapsPort(), pop3sPort()
	if tlsMode == "starttls" {
		imapP, pop3P = imapPort(), pop3Port()
	}
	y := fmt.Sprintf("  %s:\n    mailbox: %s\n", name, mailbox)
	if imapAddr != "" {
		y += fmt.Sprintf("    imap:\n      listen: %s\n      upstream: {host: \"localhost:%d\", tls: %s, ca_file: %q}\n", imapAddr, imapP, tlsMode, env.ca)
	}
	if pop3Addr != "" {
		y += fmt.Sprintf("    pop3:\n      listen: %s\n      upstream: {host: \"localhost:%d\", tls: %s, ca_file: %q}\n", pop3Addr, pop3P, tlsMode, env.ca)
	}
	return y + fmt.Sprintf(`    local_users:
      - {name: reader, username: %s, password: %q}
      - {name: reader8, username: %s, password: %q}
    credentials:
%s`, localUser, localPass, localUser8, localPass8, creds)
}

// deliver puts msg into user's INBOX through Dovecot's LMTP and returns
// the stored file, the bytes an IMAP or POP3 client must get back.
func deliver(t testing.TB, user string, msg []byte, marker string) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", portBase+24))
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("e2e"); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("sender@example.test", []string{user}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("LMTP delivery to %s: %v", user, err)
	}
	return waitForMessage(t, user, marker)
}

// messageWith is a message whose subject is marker, with the parts that
// break naive relays: 8-bit text, a long line, lines starting with ".".
func messageWith(marker string) []byte {
	return []byte("From: sender@example.test\r\nTo: reader@example.test\r\nSubject: " + marker +
		"\r\nMessage-ID: <" + marker + "@e2e>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße aus Köln — ✓\r\n.\r\n..leading dots\r\n" + strings.Repeat("y", 990) + "\r\nend\r\n")
}

type pyResult map[string]any

func runPy(t testing.TB, script string, args ...string) pyResult {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", append([]string{"testdata/" + script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	var r pyResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		t.Fatalf("%s output %q: %v", script, out, err)
	}
	if r["ok"] != true {
		t.Fatalf("%s %v: %v", script, args, r["error"])
	}
	return r
}

func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d stored (first 200: %q vs %q)", what, len(got), len(want), head(got), head(want))
	}
}

func head(b []byte) []byte { return b[:min(len(b), 200)] }

func TestIMAPClientsReadMessagesByteForByte(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+receivingProfile("reading", addr, "", carol, clientFor(carol)), addr)
	host, port, _ := net.SplitHostPort(addr)
	fetchers := map[string]func(marker, out string) ([]byte, error){
		"imaplib LOGIN quoted":       pyFetch(host, port, localUser, localPass, "quoted"),
		"imaplib LOGIN literal":      pyFetch(host, port, localUser8, localPass8, "literal"),
		"imaplib AUTHENTICATE PLAIN": pyFetch(host, port, localUser8, localPass8, "plain"),
		// curl 7.88 (Debian 12) has no AUTH=+LOGIN option: it always uses
		// AUTHENTICATE PLAIN here. LOGIN is imaplib's and fetchmail's.
		"curl AUTHENTICATE PLAIN": func(marker, out string) ([]byte, error) {
			return curlIMAP(addr, marker, out)
		},
	}
	for name, fetch := range fetchers {
		t.Run(name, func(t *testing.T) {
			marker := uniqueMarker(t)
			stored := deliver(t, carol, messageWith(marker), marker)
			out := filepath.Join(t.TempDir(), "fetched.eml")
			if msg, err := fetch(marker, out); err != nil {
				t.Fatalf("%v\n%s", err, msg)
			}
			got, _ := os.ReadFile(out)
			sameBytes(t, "FETCH BODY[]", got, stored)
		})
	}
}

func pyFetch(host, port, user, pass, mode string) func(marker, out string) ([]byte, error) {
	return func(marker, out string) ([]byte, error) {
		b, err := exec.Command("/usr/bin/python3", "testdata/imapclient.py", host, port, user, pass, mode, "fetch", marker, out).CombinedOutput()
		if err == nil && !bytes.Contains(b, []byte(`"ok": true`)) {
			err = fmt.Errorf("imapclient.py failed")
		}
		return b, err
	}
}

// curlIMAP finds the message by subject with curl's SEARCH and fetches it.
func curlIMAP(addr, marker, out string) ([]byte, error) {
	args := []string{"-sS", "--user", localUser + ":" + localPass}
	b, err := exec.Command("curl", append(args, "--url", "imap://"+addr+"/INBOX", "-X", "UID SEARCH SUBJECT "+marker)...).CombinedOutput()
	if err != nil {
		return b, err
	}
	f := strings.Fields(string(b)) // * SEARCH 7
	if len(f) != 3 {
		return b, fmt.Errorf("search: %q", b)
	}
	return exec.Command("curl", append(args, "--url", "imap://"+addr+"/INBOX/;UID="+f[2], "-o", out)...).CombinedOutput()
}

func TestIMAPFullClientSession(t *testing.T) {
	need(t)
	for _, mode := range []string{"implicit", "starttls"} {
		t.Run("upstream "+mode, func(t *testing.T) {
			addr := freeAddr(t)
			startProxy(t, "profiles:\n"+receivingProfileTLS("reading", addr, "", dave, clientFor(dave), mode), addr)
			host, port, _ := net.SplitHostPort(addr)
			marker := uniqueMarker(t)
			stored := deliver(t, dave, messageWith(marker), marker)
			dir := t.TempDir()
			big := bigMessage(marker+"-big", 10<<20*3/4) // 10 MB on the wire
			bigFile := filepath.Join(dir, "big.eml")
			os.WriteFile(bigFile, big, 0o600)

			r := runPy(t, "imapclient.py", host, port, localUser, localPass, "quoted", "session", marker, dir, bigFile)
			fetched, _ := os.ReadFile(filepath.Join(dir, "fetched.eml"))
			sameBytes(t, "FETCH BODY[]", fetched, stored)
			appended, _ := os.ReadFile(filepath.Join(dir, "appended.eml"))
			sameBytes(t, "APPEND of a 10 MB literal, fetched back", appended, big)
			if !strings.Contains(r["flags"].(string), `\Flagged`) {
				t.Errorf("STORE +FLAGS: %v", r["flags"])
			}
			if r["inbox_after_move"] != 0.0 || r["archive_after_move"] != 1.0 {
				t.Errorf("MOVE: INBOX %v, Archive %v", r["inbox_after_move"], r["archive_after_move"])
			}
			if r["expunged"] != 1.0 || r["inbox_after_expunge"] != 0.0 {
				t.Errorf("EXPUNGE: %v expunged, %v left", r["expunged"], r["inbox_after_expunge"])
			}
			t.Logf("APPEND of %d bytes took %vs", len(big), r["append_s"])
		})
	}
}

func TestPOP3ClientsReadMessagesByteForByte(t *testing.T) {
	need(t)
	for _, mode := range []string{"implicit", "starttls"} {
		t.Run("upstream "+mode, func(t *testing.T) {
			addr := freeAddr(t)
			startProxy(t, "profiles:\n"+receivingProfileTLS("reading", "", addr, erin, clientFor(erin), mode), addr)
			host, port, _ := net.SplitHostPort(addr)
			marker := uniqueMarker(t)
			stored := deliver(t, erin, messageWith(marker), marker)

			for _, login := range []struct{ name, user, pass, mode string }{
				{"poplib USER/PASS", localUser, localPass, "user"},
				{"poplib AUTH PLAIN", localUser8, localPass8, "plain"},
			} {
				dir := t.TempDir()
				r := runPy(t, "pop3client.py", host, port, login.user, login.pass, login.mode, dir)
				if n := r["stat"].([]any)[0].(float64); n != 1 {
					t.Fatalf("%s: STAT says %v messages, want 1", login.name, n)
				}
				got, _ := os.ReadFile(filepath.Join(dir, "1.eml"))
				sameBytes(t, login.name+" RETR", got, stored)
			}
			out, err := exec.Command("curl", "-sS", "--url", "pop3://"+addr+"/1", "--user", localUser+":"+localPass).CombinedOutput()
			if err != nil {
				t.Fatalf("curl pop3: %v\n%s", err, out)
			}
			sameBytes(t, "curl pop3 RETR", out, stored)

			// Delete: through mailproxy, the maildrop is empty afterwards.
			runPy(t, "pop3client.py", host, port, localUser, localPass, "user", t.TempDir(), "dele")
			if r := runPy(t, "pop3client.py", host, port, localUser, localPass, "user", t.TempDir()); r["stat"].([]any)[0].(float64) != 0 {
				t.Fatalf("after DELE and QUIT: STAT %v", r["stat"])
			}
		})
	}
}

// fetchmail drives a whole retrieval, keep or delete, through mailproxy.
func TestFetchmailKeepsAndDeletes(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("fetchmail"); err != nil {
		t.Fatal("fetchmail missing: run scripts/install-test-deps.sh")
	}
	imapAddr, pop3Addr := freeAddr(t), freeAddr(t)
	startProxy(t, "profiles:\n"+receivingProfile("reading", imapAddr, pop3Addr, frank, clientFor(frank)), imapAddr, pop3Addr)
	for _, proto := range []string{"POP3", "IMAP"} {
		t.Run(proto, func(t *testing.T) {
			addr := pop3Addr
			if proto == "IMAP" {
				addr = imapAddr
			}
			host, port, _ := net.SplitHostPort(addr)
			var stored [][]byte
			var markers []string
			for range 2 {
				m := uniqueMarker(t)
				markers = append(markers, m)
				stored = append(stored, deliver(t, frank, messageWith(m), m))
			}
			dir := t.TempDir()
			run := func(keep bool) string {
				rc := filepath.Join(dir, "fetchmailrc")
				opts := "no keep"
				if keep {
					opts = "keep"
				}
				// fetchmail's lexer ends "..." at the first quote: use '...'
				// (backslash escapes still apply inside).
				esc := strings.ReplaceAll(localPass, `\`, `\\`)
				os.WriteFile(rc, []byte(fmt.Sprintf(
					"set no bouncemail\npoll %s port %s proto %s auth password\n  user %q password '%s' is root here\n  %s fetchall sslproto ''\n  mda \"/bin/sh -c 'cat > $(mktemp -p %s msg-XXXXXXXX)'\"\n",
					host, port, proto, localUser, esc, opts, dir)), 0o600)
				cmd := exec.Command("fetchmail", "--nodetach", "--nosyslog", "-f", rc, "--idfile", filepath.Join(dir, "ids"), "--pidfile", filepath.Join(dir, "pid"))
				cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("fetchmail: %v\n%s", err, out)
				}
				return string(out)
			}
			out := run(true)
			got := readFetched(t, dir)
			for i, want := range stored {
				found := false
				for _, g := range got {
					// fetchmail hands the MDA LF line ends and adds its own
					// Received header: without it, the message is what was stored.
					g = fetchmailReceived.ReplaceAll(g, nil)
					found = found || bytes.Equal(g, bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n")))
				}
				if !found {
					t.Fatalf("message %s not retrieved intact by fetchmail:\n%s", markers[i], out)
				}
			}
			for _, m := range markers {
				if findMessage(frank, m) == nil {
					t.Fatalf("keep: %s was deleted", m)
				}
			}
			run(false)
			for _, m := range markers {
				if findMessage(frank, m) != nil {
					t.Fatalf("no keep: %s is still in the mailbox", m)
				}
			}
		})
	}
}

var fetchmailReceived = regexp.MustCompile("(?m)^Received: from [^\n]*\n\tby [^\n]*fetchmail[^\n]*\n(\t[^\n]*\n)*")

func readFetched(t testing.TB, dir string) [][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "msg-*"))
	var out [][]byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		out = append(out, b)
		os.Remove(f)
	}
	return out
}
