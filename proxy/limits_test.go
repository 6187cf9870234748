package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// A client that never logs in is closed at the login deadline counted
// from its connection's start, however often it sends a command, and it
// gets the last line.
func TestTrickledCommandsDoNotExtendTheLoginDeadline(t *testing.T) {
	limits := Limits{LoginTimeout: 600 * time.Millisecond}
	imapSrv := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{&fakeIMAPUpstream{}}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, MailboxOptions{Limits: limits})
	pop3Srv := NewPOP3Server([]POP3Profile{{Name: "p", Backend: RelayPOP3{&fakePOP3Upstream{}}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, MailboxOptions{Limits: limits})
	smtpSrv := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, Limits: limits})
	for _, tc := range []struct {
		name, addr, cmd, last string
	}{
		{"IMAP NOOP", serveLocal(t, &imapSrv.sessions), "a NOOP\r\n", "* BYE Autologout: no login within 600ms"},
		{"POP3 CAPA", serveLocal(t, &pop3Srv.sessions), "CAPA\r\n", "-ERR Autologout: no login within 600ms"},
		{"SMTP NOOP", serveLocal(t, smtpSrv), "NOOP\r\n", "421 4.4.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			lines := make(chan string, 100)
			go func() {
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						close(lines)
						return
					}
					lines <- strings.TrimRight(l, "\r\n")
				}
			}()
			go func() {
				for time.Since(start) < 5*time.Second {
					if _, err := io.WriteString(c, tc.cmd); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			var last string
			for l := range lines {
				last = l
			}
			took := time.Since(start)
			if took > 3*time.Second {
				t.Fatalf("session lasted %v with a 600 ms login timeout", took)
			}
			if !strings.HasPrefix(last, tc.last) {
				t.Fatalf("last line %q, want %q", last, tc.last)
			}
		})
	}
}

// Connections over the listener's cap are told so and closed; the others
// go on, and a place freed is taken again.
func TestConnectionsOverTheCapAreRefusedClearly(t *testing.T) {
	limits := Limits{MaxConns: 2}
	imapSrv := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{&fakeIMAPUpstream{}}}}, MailboxOptions{Limits: limits})
	pop3Srv := NewPOP3Server([]POP3Profile{{Name: "p", Backend: RelayPOP3{&fakePOP3Upstream{}}}}, MailboxOptions{Limits: limits})
	smtpSrv := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}}}, Limits: limits})
	for _, tc := range []struct{ name, addr, greeting, full string }{
		{"IMAP", serveLocal(t, &imapSrv.sessions), "* OK", "* BYE [UNAVAILABLE] mailproxy: too many connections (2) to this listener: try again later"},
		{"POP3", serveLocal(t, &pop3Srv.sessions), "+OK", "-ERR [SYS/TEMP] mailproxy: too many connections (2) to this listener: try again later"},
		{"SMTP", serveLocal(t, smtpSrv), "220 ", "421 4.7.0 mailproxy: too many connections (2) to this listener: try again later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial := func() (net.Conn, string) {
				c, err := net.Dial("tcp", tc.addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				l, _ := bufio.NewReader(c).ReadString('\n')
				return c, strings.TrimRight(l, "\r\n")
			}
			a, ga := dial()
			b, gb := dial()
			if !strings.HasPrefix(ga, tc.greeting) || !strings.HasPrefix(gb, tc.greeting) {
				t.Fatalf("greetings %q %q", ga, gb)
			}
			c, gc := dial()
			if gc != tc.full {
				t.Fatalf("third connection got %q, want %q", gc, tc.full)
			}
			c.Close()
			a.Close()
			deadline := time.Now().Add(5 * time.Second)
			for {
				d, gd := dial()
				d.Close()
				if strings.HasPrefix(gd, tc.greeting) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a freed place is not taken again: %q", gd)
				}
				time.Sleep(20 * time.Millisecond)
			}
			b.Close()
		})
	}
}

func TestPerAddressCapSparesLoopback(t *testing.T) {
	l := guard(nil, "imap", Limits{MaxPerAddress: 1}, nil, nil, nil)
	remote := netip.MustParseAddr("192.0.2.7")
	if l.admit(remote) != "" {
		t.Fatal("first connection from an address refused")
	}
	if reason := l.admit(remote); !strings.Contains(reason, "too many connections (1) from 192.0.2.7") {
		t.Fatalf("second connection from one address: %q", reason)
	}
	l.release(&guardedConn{addr: remote})
	if l.admit(remote) != "" {
		t.Fatal("a released place is not given again")
	}
	for range 3 {
		if l.admit(netip.MustParseAddr("127.0.0.1")) != "" {
			t.Fatal("loopback clients are held to the per-address cap")
		}
	}
}

// SMTP answers a wrong password after a delay and closes the connection
// after the third, as IMAP and POP3 do.
func TestSMTPWrongPasswordsAreSlowAndEndTheConnection(t *testing.T) {
	srv := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}})
	srv.failureDelay = 300 * time.Millisecond
	c := dialSMTP(t, serveLocal(t, srv))
	c.send("EHLO x\r\n")
	c.until("250 ")
	for i := range 3 {
		start := time.Now()
		c.send("AUTH PLAIN " + plainB64("joe", fmt.Sprint("wrong", i)) + "\r\n")
		got := c.line()
		if !strings.HasPrefix(got, "535 ") {
			t.Fatalf("wrong password %d: %q", i, got)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Fatalf("wrong password answered after %v, want the failure delay", took)
		}
	}
	c.c.SetDeadline(time.Now().Add(3 * time.Second))
	if l, err := c.r.ReadString('\n'); err == nil {
		t.Fatalf("connection open after 3 wrong passwords: %q", l)
	}
}

// Failed logins from one address are limited across connections and
// protocols: beyond the budget, logins are refused as temporary failures
// without a password check, the right password too.
func TestFailedLoginsPerAddressAcrossConnections(t *testing.T) {
	logins := NewLoginGuard(3)
	limits := Limits{Logins: logins}
	users := []LocalUser{{Username: "joe", Password: "pw"}}
	imapSrv := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{&fakeIMAPUpstream{err: errors.New("unused")}}, Users: users}}, MailboxOptions{Limits: limits})
	imapSrv.failureDelay = 0
	pop3Srv := NewPOP3Server([]POP3Profile{{Name: "p", Backend: RelayPOP3{&fakePOP3Upstream{err: errors.New("unused")}}, Users: users}}, MailboxOptions{Limits: limits})
	pop3Srv.failureDelay = 0
	smtpSrv := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}, Users: users}}, Limits: limits})
	smtpSrv.failureDelay = 0
	imapAddr, pop3Addr, smtpAddr := serveLocal(t, &imapSrv.sessions), serveLocal(t, &pop3Srv.sessions), serveLocal(t, smtpSrv)

	// Three failures, each on a connection of its own, of three protocols.
	ic := dialIMAP(t, imapAddr)
	ic.send("a1 LOGIN joe wrong\r\n")
	ic.expect("a1 NO [AUTHENTICATIONFAILED]")
	pc := dialPOP3(t, pop3Addr)
	pc.send("USER joe\r\nPASS wrong\r\n")
	pc.line()
	if l := pc.line(); !strings.HasPrefix(l, "-ERR [AUTH]") {
		t.Fatalf("POP3 wrong password: %q", l)
	}
	sc := dialSMTP(t, smtpAddr)
	sc.send("EHLO x\r\nAUTH PLAIN " + plainB64("joe", "wrong") + "\r\n")
	sc.until("250 ")
	if l := sc.line(); !strings.HasPrefix(l, "535 ") {
		t.Fatalf("SMTP wrong password: %q", l)
	}
	// The budget is spent: the right password is refused, temporarily.
	ic2 := dialIMAP(t, imapAddr)
	ic2.send("a1 LOGIN joe pw\r\n")
	if l := ic2.expect("a1 "); !regexp.MustCompile(`^a1 NO \[UNAVAILABLE\] Too many failed logins from 127\.0\.0\.1: try again in \d+s$`).MatchString(l) {
		t.Fatalf("IMAP after the budget: %q", l)
	}
	pc2 := dialPOP3(t, pop3Addr)
	pc2.send("USER joe\r\nPASS pw\r\n")
	pc2.line()
	if l := pc2.line(); !strings.HasPrefix(l, "-ERR [SYS/TEMP] Too many failed logins from 127.0.0.1") {
		t.Fatalf("POP3 after the budget: %q", l)
	}
	sc2 := dialSMTP(t, smtpAddr)
	sc2.send("EHLO x\r\nAUTH PLAIN " + plainB64("joe", "pw") + "\r\n")
	sc2.until("250 ")
	if l := sc2.line(); !strings.HasPrefix(l, "454 4.7.0 Too many failed logins from 127.0.0.1") {
		t.Fatalf("SMTP after the budget: %q", l)
	}
	// The budget refills: a minute of 3 failures is one every 20 s.
	logins.now = func() time.Time { return time.Now().Add(21 * time.Second) }
	ic2.send("a2 LOGIN joe pw\r\n")
	if l := ic2.expect("a2 "); !strings.HasPrefix(l, "a2 NO [UNAVAILABLE] unused") { // the password passed; the fake upstream fails
		t.Fatalf("IMAP after the refill: %q", l)
	}
}

func TestPOP3RepliesCarryOnlyPrintableASCII(t *testing.T) {
	c := startPOP3(t, &fakePOP3Upstream{})()
	c.send("\xff\xfe\x1b[2JFOO\xc3\xa9 bar\r\n")
	l := c.line()
	if !strings.HasPrefix(l, "-ERR ") {
		t.Fatalf("got %q", l)
	}
	for i := 0; i < len(l); i++ {
		if l[i] < 0x20 || l[i] >= 0x7f {
			t.Fatalf("reply holds byte %#x: %q", l[i], l)
		}
	}
}

// Shutdown does not wait for logins under way (an upstream or token
// endpoint that hangs) nor for clients that have not logged in.
func TestShutdownAbandonsLoginsUnderWay(t *testing.T) {
	hang := &hangingIMAP{started: make(chan struct{}, 1)}
	s := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{hang}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, MailboxOptions{})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	waiting := dialIMAP(t, l.Addr().String()) // logged in locally, waiting upstream
	waiting.send("a1 LOGIN joe pw\r\n")
	<-hang.started
	dialIMAP(t, l.Addr().String()) // connected, not logged in
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	s.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Shutdown took %v with only logins under way", took)
	}
}

// The README lists what SMTP advertises; they agree.
func TestSMTPAdvertisesWhatTheREADMESays(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)- \\*\\*SMTP\\*\\* advertises only (.*?)\n(?:- |\n)").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no SMTP capability list")
	}
	var documented []string
	for _, q := range regexp.MustCompile("`([^`]+)`").FindAllSubmatch(m[1], -1) {
		documented = append(documented, strings.Fields(string(q[1]))[0])
	}
	srv := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, MaxMessageBytes: 1 << 20})
	c := dialSMTP(t, serveLocal(t, srv))
	c.send("EHLO x\r\n")
	var advertised []string
	for {
		l := c.line()
		if !strings.HasPrefix(l, "250") {
			t.Fatalf("EHLO: %q", l)
		}
		if strings.HasPrefix(l[4:], "Hello") {
			continue
		}
		advertised = append(advertised, strings.Fields(l[4:])[0])
		if l[3] == ' ' {
			break
		}
	}
	slices.Sort(documented)
	slices.Sort(advertised)
	documented = slices.DeleteFunc(documented, func(s string) bool { return s == "STARTTLS" }) // with a certificate only
	if !slices.Equal(documented, advertised) {
		t.Fatalf("README lists %v, EHLO says %v", documented, advertised)
	}
}

type nopSender struct{}

func (nopSender) Begin(context.Context, string, *smtp.MailOptions) (Transaction, error) {
	return nil, errors.New("unused")
}

// hangingIMAP is an upstream whose login never ends until its context does.
type hangingIMAP struct{ started chan struct{} }

func (h *hangingIMAP) Login(ctx context.Context) (net.Conn, []string, error) {
	h.started <- struct{}{}
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

func dialSMTP(t *testing.T, addr string) *client {
	c := dialLine(t, addr)
	if g := c.line(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

func dialIMAP(t *testing.T, addr string) *client {
	c := dialLine(t, addr)
	c.line()
	return c
}

func dialPOP3(t *testing.T, addr string) *client {
	c := dialLine(t, addr)
	c.line()
	return c
}

func dialLine(t *testing.T, addr string) *client {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func plainB64(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// until reads lines until one starts with prefix and returns it.
func (c *client) until(prefix string) string {
	c.t.Helper()
	for {
		if l := c.line(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

// SMTP's shutdown closes connections between messages at once, greeted or
// not, so only messages in flight hold it.
func TestSMTPShutdownDoesNotWaitForQuietConnections(t *testing.T) {
	s := NewSMTPServer(SMTPOptions{Profiles: []SMTPProfile{{Name: "p", Sender: nopSender{}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	dialSMTP(t, l.Addr().String()) // greeted, silent
	c := dialSMTP(t, l.Addr().String())
	c.send("EHLO x\r\n") // a session, between messages
	c.until("250 ")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	s.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Shutdown took %v with only quiet connections", took)
	}
}
