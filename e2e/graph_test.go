package e2e

// Microsoft 365 through Graph: real SMTP and POP3 clients through
// mailproxy to the Graph double (fakegraph), with tokens from the fake
// issuer's Microsoft endpoints (MSAL confidential and public clients).

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http/httptest"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/fakegraph"
	"mailproxy/idp"
)

// The Graph double and its app, started once.
var graphEnv struct {
	once  sync.Once
	g     *fakegraph.Server
	url   string // .../v1.0
	ca    string // PEM file of its certificate
	appID string
}

const (
	graphMailbox = "cmo@contoso.example"
	graphSecret  = "graph-app-secret"
	graphUserID  = "5f0c5c8e-1111-4222-8333-000000000001"
	colleague    = "colleague@contoso.example"
)

func graphDouble(t testing.TB) *fakegraph.Server {
	t.Helper()
	graphEnv.once.Do(func() {
		g := fakegraph.New(env.idp)
		srv := httptest.NewUnstartedServer(g)
		srv.StartTLS()
		g.URL = srv.URL
		graphEnv.g, graphEnv.url = g, srv.URL+"/v1.0"
		graphEnv.ca = filepath.Join(env.work, "graph-ca.pem")
		os.WriteFile(graphEnv.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
		graphEnv.appID = "22222222-aaaa-4bbb-8ccc-000000000001"
		env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: graphEnv.appID, Secret: graphSecret, Mailbox: graphMailbox,
			Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
		g.AddMailbox(graphMailbox, graphUserID)
		g.AddMailbox(colleague, "5f0c5c8e-1111-4222-8333-000000000002")
	})
	return graphEnv.g
}

// graphProfile sends (smtpAddr) and reads (pop3Addr) the double's mailbox
// with the app-only credential; an empty address leaves a protocol out.
func graphProfile(t testing.TB, name, smtpAddr, pop3Addr, extra string) string {
	graphDouble(t)
	return graphProfileAs(name, graphMailbox, graphUserID, smtpAddr, pop3Addr, extra, fmt.Sprintf(
		"      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: %s\n",
		env.idpURL, tenant, graphEnv.appID, graphSecret))
}

// graphProfileAs is a Graph profile of mailbox (the double's user id
// user, or "" for the default) with credentials creds.
func graphProfileAs(name, mailbox, user, smtpAddr, pop3Addr, extra, creds string) string {
	g := ""
	if user != "" {
		g = "user: " + user + ", "
	}
	y := fmt.Sprintf("  %s:\n    mailbox: %s\n    graph: {%sendpoint: %q, ca_file: %q}\n", name, mailbox, g, graphEnv.url, graphEnv.ca)
	if smtpAddr != "" {
		y += fmt.Sprintf("    smtp: {listen: %s}\n", smtpAddr)
	}
	if pop3Addr != "" {
		y += fmt.Sprintf("    pop3: {listen: %s%s}\n", pop3Addr, extra)
	}
	return y + fmt.Sprintf("    local_users:\n      - {name: cmo, username: %s, password: %q}\n    credentials:\n%s", localUser, localPass, creds)
}

// delivered is what the double delivered to address that holds marker.
func delivered(g *fakegraph.Server, address, marker string) []fakegraph.Message {
	var out []fakegraph.Message
	for _, m := range g.Delivered(address) {
		if bytes.Contains(m.MIME, []byte(marker)) {
			out = append(out, m)
		}
	}
	return out
}

// exactlyOnce waits until each address got one copy holding marker and
// checks no one else got any.
func exactlyOnce(t *testing.T, g *fakegraph.Server, marker string, want []string, notWant ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range want {
		for len(delivered(g, a, marker)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := len(delivered(g, a, marker)); n != 1 {
			t.Fatalf("%s got %d copies of %s, want 1", a, n, marker)
		}
	}
	for _, a := range notWant {
		if n := len(delivered(g, a, marker)); n != 0 {
			t.Fatalf("%s got %d copies of %s, but was not a recipient of the envelope", a, n, marker)
		}
	}
}

func TestSMTPToGraphDeliversToTheEnvelopeExactly(t *testing.T) {
	need(t)
	g := graphDouble(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+graphProfile(t, "m365", addr, "", ""), addr)

	t.Run("a Bcc-only recipient (swaks)", func(t *testing.T) {
		marker := uniqueMarker(t)
		host, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command("swaks", "--server", host, "--port", port, "--auth", "LOGIN", "--auth-user", localUser, "--auth-password", localPass,
			"--from", graphMailbox, "--to", "visible@partner.example,hidden@partner.example",
			"--header", "From: CMO <"+graphMailbox+">", "--header", "To: visible@partner.example", "--header", "Subject: "+marker,
			"--body", "to one visible and one hidden recipient").CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		exactlyOnce(t, g, marker, []string{"visible@partner.example", "hidden@partner.example"})
		for _, m := range delivered(g, "visible@partner.example", marker) {
			if bytes.Contains(bytes.ToLower(m.MIME), []byte("hidden@partner.example")) {
				t.Fatal("the visible recipient can see the hidden one")
			}
		}
	})

	t.Run("one copy per recipient under a shared To (smtplib)", func(t *testing.T) {
		marker := uniqueMarker(t)
		rcpts := []string{"one@partner.example", "two@partner.example", colleague}
		msg := []byte("From: " + graphMailbox + "\r\nTo: " + strings.Join(rcpts, ", ") + "\r\nSubject: " + marker + "\r\n\r\nthe same message, one transaction per recipient\r\n")
		for _, r := range rcpts {
			if res := pySend(t, addr, localUser, localPass, r, msg, 1); !res.OK {
				t.Fatalf("to %s: %+v", r, res)
			}
		}
		exactlyOnce(t, g, marker, rcpts)
		inbox := g.Messages(colleague, "inbox")
		n := 0
		for _, m := range inbox {
			if bytes.Contains(m.MIME, []byte(marker)) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("the colleague's inbox holds %d copies, want 1", n)
		}
	})

	t.Run("8-bit and UTF-8", func(t *testing.T) {
		marker := uniqueMarker(t)
		msg := []byte("From: " + graphMailbox + "\r\nTo: Jürgen <jurgen@partner.example>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= " + marker +
			"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ✓\r\n")
		if res := pySend(t, addr, localUser, localPass, "jurgen@partner.example", msg, 1); !res.OK {
			t.Fatalf("%+v", res)
		}
		exactlyOnce(t, g, marker, []string{"jurgen@partner.example"})
		if m := delivered(g, "jurgen@partner.example", marker)[0]; !bytes.Contains(m.MIME, []byte("Grüße aus Köln — ✓")) {
			t.Fatalf("8-bit body changed:\n%s", m.MIME)
		}
	})

	t.Run("a 20 MB attachment arrives intact", func(t *testing.T) {
		marker := uniqueMarker(t)
		msg := bigMessage(marker, 20<<20)
		msg = bytes.Replace(msg, []byte("From: app@example.test"), []byte("From: "+graphMailbox), 1)
		if res := pySend(t, addr, localUser, localPass, "bob@example.test", msg, 1); !res.OK {
			t.Fatalf("%+v", res)
		}
		exactlyOnce(t, g, marker, []string{"bob@example.test"})
		m := delivered(g, "bob@example.test", marker)[0]
		raw := make([]byte, 20<<20)
		for i := range raw {
			raw[i] = byte(i * 7)
		}
		parts := mimeParts(t, m.MIME)
		if !slices.ContainsFunc(parts, func(p []byte) bool { return bytes.Equal(p, raw) }) {
			t.Fatalf("the 20 MB attachment is not among the %d delivered parts intact", len(parts))
		}
	})

	t.Run("a From the mailbox may not send as is a 5xx naming the fix", func(t *testing.T) {
		msg := []byte("From: ceo@contoso.example\r\nTo: one@partner.example\r\nSubject: " + uniqueMarker(t) + "\r\n\r\nx\r\n")
		res := pySend(t, addr, localUser, localPass, "one@partner.example", msg, 1)
		if res.OK || res.Code != 550 || !strings.Contains(res.Msg, "ErrorSendAsDenied") || !strings.Contains(res.Msg, "Send As") {
			t.Fatalf("%+v", res)
		}
	})
}

// A POP3 login reads the double's inbox: LIST, UIDL, RETR byte for byte
// with poplib, curl and fetchmail; UIDL survives a restart; DELE then QUIT
// moves to Deleted Items.
func TestPOP3OverGraph(t *testing.T) {
	need(t)
	g := graphDouble(t)
	pop3Addr := freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+graphProfile(t, "m365", "", pop3Addr, ""))
	p := startProxyFile(t, cfg, pop3Addr)
	host, port, _ := net.SplitHostPort(pop3Addr)

	marker := uniqueMarker(t)
	mime := messageWith(marker)
	g.Put(graphMailbox, "inbox", mime)
	stored := func() []byte {
		for _, m := range g.Messages(graphMailbox, "inbox") {
			if bytes.Contains(m.MIME, []byte(marker)) {
				return m.MIME
			}
		}
		t.Fatal("the message is not in the double's inbox")
		return nil
	}()
	uidls := func() map[string]string {
		c := dialRaw(t, pop3Addr)
		defer c.c.Close()
		c.send("USER " + localUser + "\r\nPASS " + localPass + "\r\nUIDL\r\n")
		c.line()
		if l := c.line(); l != "+OK Logged in" {
			t.Fatalf("login: %q", l)
		}
		c.line()
		out := map[string]string{}
		for l := c.line(); l != "."; l = c.line() {
			n, u, _ := strings.Cut(l, " ")
			out[n] = u
		}
		return out
	}
	before := uidls()
	for _, u := range before {
		if len(u) < 1 || len(u) > 70 {
			t.Fatalf("UIDL %q is outside RFC 1939's 1 to 70 characters", u)
		}
	}

	t.Run("poplib RETR byte for byte", func(t *testing.T) {
		dir := t.TempDir()
		runPy(t, "pop3client.py", host, port, localUser, localPass, "user", dir)
		if !slices.ContainsFunc(readDir(t, dir), func(b []byte) bool { return bytes.Equal(b, stored) }) {
			t.Fatal("poplib did not get the message byte for byte")
		}
	})
	t.Run("curl pop3://", func(t *testing.T) {
		out, err := exec.Command("curl", "-sS", "--user", localUser+":"+localPass, "pop3://"+pop3Addr+"/"+strconv.Itoa(len(before))).Output()
		if err != nil || !bytes.Equal(out, stored) {
			t.Fatalf("curl: %v (%d octets, want %d)", err, len(out), len(stored))
		}
	})
	p.stop()
	p = startProxyFile(t, cfg, pop3Addr)
	if after := uidls(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("UIDL changed across a restart:\n%v\n%v", before, after)
	}

	t.Run("fetchmail, then DELE and QUIT move to Deleted Items", func(t *testing.T) {
		dir := t.TempDir()
		rc := filepath.Join(dir, "fetchmailrc")
		os.WriteFile(rc, []byte(fmt.Sprintf("set no bouncemail\npoll localhost port %s proto POP3 auth password\n  user %q password '%s' is root here\n  no keep fetchall sslproto ''\n  mda \"/bin/sh -c 'cat > $(mktemp -p %s msg-XXXXXXXX)'\"\n",
			port, localUser, strings.ReplaceAll(localPass, `\`, `\\`), dir)), 0o600)
		cmd := exec.Command("fetchmail", "--nodetach", "--nosyslog", "-f", rc, "--idfile", filepath.Join(dir, "ids"), "--pidfile", filepath.Join(dir, "pid"))
		cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fetchmail: %v\n%s", err, out)
		}
		want := bytes.ReplaceAll(stored, []byte("\r\n"), []byte("\n"))
		if !slices.ContainsFunc(readFetched(t, dir), func(b []byte) bool { return bytes.Equal(fetchmailReceived.ReplaceAll(b, nil), want) }) {
			t.Fatal("fetchmail did not retrieve the message intact")
		}
		inDeleted := slices.ContainsFunc(g.Messages(graphMailbox, "deleteditems"), func(m fakegraph.Message) bool { return bytes.Contains(m.MIME, []byte(marker)) })
		inInbox := slices.ContainsFunc(g.Messages(graphMailbox, "inbox"), func(m fakegraph.Message) bool { return bytes.Contains(m.MIME, []byte(marker)) })
		if !inDeleted || inInbox {
			t.Fatalf("after fetchmail's DELE and QUIT: in Deleted Items %v, in Inbox %v", inDeleted, inInbox)
		}
	})
	_ = p
}

// mimeParts decodes every leaf part of a message (base64 and
// quoted-printable undone).
func mimeParts(t *testing.T, msg []byte) [][]byte {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	var walk func(h textproto.MIMEHeader, body io.Reader)
	walk = func(h textproto.MIMEHeader, body io.Reader) {
		mt, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if err != nil {
					return
				}
				walk(p.Header, p)
			}
		}
		if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "base64") {
			body = base64.NewDecoder(base64.StdEncoding, body)
		} else if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		data, _ := io.ReadAll(body)
		out = append(out, data)
	}
	walk(textproto.MIMEHeader(m.Header), m.Body)
	return out
}

func readDir(t *testing.T, dir string) [][]byte {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out [][]byte
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			out = append(out, b)
		}
	}
	return out
}
