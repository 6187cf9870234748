package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawIMAP is a bare client for the cases real clients cannot be made to
// produce (an IDLE held open, broken input) or where the exact reply matters.
type rawIMAP struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawIMAP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawIMAP{t: t, c: c, r: bufio.NewReader(c)}
	r.line() // greeting
	return r
}

func (r *rawIMAP) send(s string) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawIMAP) line() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	l, err := r.r.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (%q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// until reads lines until one has prefix and returns it.
func (r *rawIMAP) until(prefix string) string {
	r.t.Helper()
	for {
		if l := r.line(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

func imapLogin(user, pass string) string {
	q := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(pass)
	return fmt.Sprintf("a1 LOGIN %s \"%s\"\r\n", user, q)
}

func TestIMAPIdleClientIsToldOfNewMailWithin2s(t *testing.T) {
	need(t)
	imapAddr, smtpAddr := freeAddr(t), freeAddr(t)
	cfg := "profiles:\n" + receivingProfile("reading", imapAddr, "", alice, clientFor(alice)) +
		oauthProfile("sending", smtpAddr, bob, genericCreds(), "")
	startProxy(t, cfg, imapAddr, smtpAddr)

	c := dialRaw(t, imapAddr)
	c.send(imapLogin(localUser, localPass))
	c.until("a1 OK")
	c.send("a2 SELECT INBOX\r\n")
	c.until("a2 OK")
	c.send("a3 IDLE\r\n")
	if l := c.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	marker := uniqueMarker(t)
	msg := strings.ReplaceAll(string(simpleMessage(marker)), bob, alice)
	if r := pySend(t, smtpAddr, localUser, localPass, alice, []byte(msg), 1); !r.OK {
		t.Fatalf("send through mailproxy and Postfix: %d %s", r.Code, r.Msg)
	}
	sent := time.Now()
	c.c.SetReadDeadline(sent.Add(2 * time.Second))
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("no EXISTS within 2 s of the 250 (%v): %q", err, l)
		}
		if strings.HasSuffix(strings.TrimSpace(l), "EXISTS") {
			t.Logf("IDLE client told %q %v after the 250", strings.TrimSpace(l), time.Since(sent).Round(time.Millisecond))
			break
		}
	}
	c.send("DONE\r\n")
	c.until("a3 OK")
}

func TestReceivingLoginErrorsSayWhatFailed(t *testing.T) {
	need(t)
	imapAddr, pop3Addr := freeAddr(t), freeAddr(t)
	deadIMAP, deadPOP3 := freeAddr(t), freeAddr(t)
	closed := freeAddr(t) // nothing listens here
	unreachable := strings.NewReplacer(fmt.Sprintf("localhost:%d", imapsPort()), closed, fmt.Sprintf("localhost:%d", pop3sPort()), closed).
		Replace(receivingProfile("unreachable", deadIMAP, deadPOP3, bob, clientFor(bob)))
	// A token for bob used as alice: Dovecot refuses it.
	cfg := "profiles:\n" + receivingProfile("wrong-mailbox", imapAddr, pop3Addr, alice, clientFor(bob)) + unreachable
	p := startProxy(t, cfg, imapAddr, pop3Addr, deadIMAP, deadPOP3)

	for _, tc := range []struct{ name, addr, want string }{
		{"IMAP: upstream refused the token", imapAddr, `a1 NO [AUTHENTICATIONFAILED] profile "wrong-mailbox": upstream auth: server refused the login: NO [AUTHENTICATIONFAILED]`},
		{"IMAP: upstream unreachable", deadIMAP, `a1 NO [UNAVAILABLE] profile "unreachable": upstream connect: dial tcp ` + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tc.addr)
			c.send(imapLogin(localUser, localPass))
			if got := c.until("a1 "); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %q\nwant %q...", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, addr, want string }{
		{"POP3: upstream refused the token", pop3Addr, `-ERR [AUTH] profile "wrong-mailbox": upstream auth: server refused the login: -ERR [AUTH]`},
		{"POP3: upstream unreachable", deadPOP3, `-ERR [SYS/TEMP] profile "unreachable": upstream connect: dial tcp ` + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tc.addr)
			c.send("USER " + localUser + "\r\nPASS " + localPass + "\r\n")
			c.line()
			if got := c.line(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %q\nwant %q...", got, tc.want)
			}
		})
	}
	for _, secret := range []string{"client-bob-secret", localPass} {
		if strings.Contains(p.logs.String(), secret) {
			t.Fatalf("a secret reached the log:\n%s", p.logs.String())
		}
	}
}

func TestReceivingTokenEndpointDownIsTemporaryThenRecovers(t *testing.T) {
	need(t)
	imapAddr, pop3Addr := freeAddr(t), freeAddr(t)
	env.idp.SetDown(true) // before mailproxy's first token request
	t.Cleanup(func() { env.idp.SetDown(false) })
	startProxy(t, "profiles:\n"+receivingProfile("reading", imapAddr, pop3Addr, carol, clientFor(carol)), imapAddr, pop3Addr)

	c := dialRaw(t, imapAddr)
	c.send(imapLogin(localUser, localPass))
	if got := c.until("a1 "); !strings.HasPrefix(got, `a1 NO [UNAVAILABLE] profile "reading": token:`) {
		t.Fatalf("IMAP with the token endpoint down: %q", got)
	}
	pc := dialRaw(t, pop3Addr)
	pc.send("USER " + localUser + "\r\nPASS " + localPass + "\r\n")
	pc.line()
	if got := pc.line(); !strings.HasPrefix(got, `-ERR [SYS/TEMP] profile "reading": token:`) {
		t.Fatalf("POP3 with the token endpoint down: %q", got)
	}

	env.idp.SetDown(false)
	// The app retries on the same connection, as a client does after NO.
	deadline := time.Now().Add(20 * time.Second)
	for i := 2; ; i++ {
		c.send(fmt.Sprintf("a%d LOGIN %s \"%s\"\r\n", i, localUser, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(localPass)))
		got := c.until(fmt.Sprintf("a%d ", i))
		if strings.HasPrefix(got, fmt.Sprintf("a%d OK", i)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the token endpoint came back: %q", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestBadIMAPInputDoesNotHarmOtherSessions(t *testing.T) {
	need(t)
	imapAddr := freeAddr(t)
	p := startProxy(t, "profiles:\n"+receivingProfile("reading", imapAddr, "", dave, clientFor(dave)), imapAddr)

	// A good client in a session the whole time.
	good := dialRaw(t, imapAddr)
	good.send(imapLogin(localUser, localPass))
	good.until("a1 OK")

	for _, tc := range []struct{ name, send, want string }{
		{"10 MB line", "a1 LOGIN " + strings.Repeat("x", 10<<20) + "\r\n", "* BYE line too long"},
		{"binary junk", "\x00\x01\x02\xff\xfe\xfd\r\n", "* BAD expected: tag command"},
		{"literal of 2^32 octets", "a1 LOGIN {4294967296}\r\n", "a1 BAD literal too large"},
		{"non-synchronising literal of 2^32 octets", "a1 LOGIN {4294967296+}\r\n", "* BYE non-synchronising literal too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, imapAddr)
			go c.c.Write([]byte(tc.send)) // the server may answer before it has read it all
			if got := c.line(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("unterminated literal", func(t *testing.T) {
		c := dialRaw(t, imapAddr)
		c.send("a1 LOGIN {100}\r\n")
		if l := c.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("got %q", l)
		}
		c.send("only ten b")
		c.c.(*net.TCPConn).CloseWrite()
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if l, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("session went on after a cut literal: %q", l)
		}
	})
	t.Run("login storm", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		replies := map[string]int{}
		for range 300 {
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", imapAddr, 10*time.Second)
				if err != nil {
					mu.Lock()
					replies["dial: "+err.Error()]++
					mu.Unlock()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				r.ReadString('\n')
				for i := range 3 {
					fmt.Fprintf(c, "s%d LOGIN %s wrong%d\r\n", i, localUser, i)
					l, _ := r.ReadString('\n')
					mu.Lock()
					replies[strings.TrimSpace(l)]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		// Failed logins per address are limited across connections
		// (limits.failed_logins, 30 a minute): the rest are told to wait,
		// with no password check.
		checked, refused := 0, 0
		for reply, n := range replies {
			switch {
			case strings.Contains(reply, "NO [AUTHENTICATIONFAILED] Invalid user name or password"):
				checked += n
			case strings.Contains(reply, "NO [UNAVAILABLE] Too many failed logins from 127.0.0.1: try again in"):
				refused += n
			default:
				t.Errorf("%d × %q", n, reply)
			}
		}
		if checked < 1 || checked > 32 || checked+refused != 900 {
			t.Errorf("%d passwords checked and %d refused of 900 wrong logins from one address, want at most 32 checked", checked, refused)
		}
		if rss := peakRSS(t, p.cmd.Process.Pid); rss > 200<<10 {
			t.Errorf("peak RSS %d MB after the storm", rss>>10)
		}
	})
	// The good session never noticed.
	good.send("a2 SELECT INBOX\r\n")
	good.until("a2 OK")
	good.send("a3 LOGOUT\r\n")
	good.until("a3 OK")
}

func TestSeveralProfilesOnOneListenerLoginPicksTheMailbox(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	a := strings.NewReplacer("username: "+localUser+",", "username: alice-app,", "username: "+localUser8+",", "username: alice-app8,").
		Replace(receivingProfile("alice-in", addr, "", alice, clientFor(alice)))
	b := receivingProfile("bob-in", addr, "", bob, clientFor(bob))
	startProxy(t, "profiles:\n"+a+b, addr)
	for _, tc := range []struct{ user, mailbox string }{{"alice-app", alice}, {localUser, bob}} {
		marker := uniqueMarker(t)
		deliver(t, tc.mailbox, messageWith(marker), marker)
		out, err := exec.Command("curl", "-sS", "--url", "imap://"+addr+"/INBOX", "--user", tc.user+":"+localPass,
			"-X", "UID SEARCH SUBJECT "+marker).CombinedOutput()
		if err != nil || len(strings.Fields(string(out))) != 3 {
			t.Fatalf("%s did not see its own mailbox %s: %v %q", tc.user, tc.mailbox, err, out)
		}
	}
}

func TestCheckLogsInOverIMAPAndPOP3(t *testing.T) {
	need(t)
	imapAddr, pop3Addr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+receivingProfile("reading", imapAddr, pop3Addr, erin, clientFor(erin))+
		receivingProfile("refused", freeAddr(t), freeAddr(t), alice, clientFor(bob)))
	cmd := exec.Command(env.bin, "check", "-config", cfg, "reading")
	cmd.Env = append(cmd.Environ(), "SSL_CERT_FILE="+env.idpCA)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("imap   ok    localhost:%d (implicit), AUTH XOAUTH2 as %s accepted, INBOX has", imapsPort(), erin),
		fmt.Sprintf("pop3   ok    localhost:%d (implicit), AUTH XOAUTH2 as %s accepted, STAT:", pop3sPort(), erin),
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	cmd = exec.Command(env.bin, "check", "-config", cfg, "refused")
	cmd.Env = append(cmd.Environ(), "SSL_CERT_FILE="+env.idpCA)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "imap   FAIL  profile \"refused\": upstream auth: server refused the login") ||
		!strings.Contains(string(out), "pop3   FAIL  profile \"refused\": upstream auth: server refused the login") {
		t.Fatalf("check of a refused profile: %v\n%s", err, out)
	}
}
