package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

func TestIMAPCommandReader(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		tag, cmd  string
		args      []string
		conts     int    // "+" continuations sent
		bad, fail string // expected error text
	}{
		{name: "atoms", in: "a1 login joe@ex.com secret\r\n", tag: "a1", cmd: "LOGIN", args: []string{"joe@ex.com", "secret"}},
		{name: "quoted with escapes", in: `a2 LOGIN joe "pa ss\"w\\d"` + "\r\n", tag: "a2", cmd: "LOGIN", args: []string{"joe", `pa ss"w\d`}},
		{name: "synchronising literals", in: "a3 LOGIN {10}\r\njoe@ex.com {6}\r\nsecret\r\n", tag: "a3", cmd: "LOGIN", args: []string{"joe@ex.com", "secret"}, conts: 2},
		{name: "non-synchronising literals", in: "a4 LOGIN {3+}\r\njoe {8+}\r\nse\r\ncr t\r\n", tag: "a4", cmd: "LOGIN", args: []string{"joe", "se\r\ncr t"}},
		{name: "empty literal", in: "a5 LOGIN joe {0}\r\n\r\n", tag: "a5", cmd: "LOGIN", args: []string{"joe", ""}, conts: 1},
		{name: "8-bit quoted", in: "a6 LOGIN joe \"pässwörd\"\r\n", tag: "a6", cmd: "LOGIN", args: []string{"joe", "pässwörd"}},
		{name: "list", in: `a7 ID ("name" "x")` + "\r\n", tag: "a7", cmd: "ID", args: []string{"(", "name", "x", ")"}},
		{name: "bare LF", in: "a8 NOOP\n", tag: "a8", cmd: "NOOP"},
		{name: "bad escape", in: `b1 LOGIN joe "a\b"` + "\r\n", bad: "bad escape"},
		{name: "unterminated quote", in: `b2 LOGIN joe "abc` + "\r\n", bad: "unterminated"},
		{name: "literal over 32 bits", in: "b3 LOGIN joe {4294967296}\r\n", bad: "literal too large"},
		{name: "literal too large", in: "b4 LOGIN joe {5000}\r\n", bad: "literal too large"},
		{name: "malformed literal", in: "b5 LOGIN {12x}\r\n", bad: "malformed literal"},
		{name: "no command", in: "b6\r\n", bad: "expected a command"},
		{name: "bad tag", in: "+ LOGIN a b\r\n", bad: "expected: tag"},
		{name: "non-synchronising literal too large", in: "c1 LOGIN joe {4294967296+}\r\n", fail: "too large"},
		{name: "endless line", in: "c2 LOGIN " + strings.Repeat("x", 10<<20) + "\r\n", fail: "line too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conts := 0
			ir := &imapReader{r: bufio.NewReader(strings.NewReader(tc.in)), ready: func() error { conts++; return nil }}
			cmd, err := ir.read()
			var bad *errBad
			var fatal *errFatal
			switch {
			case tc.bad != "":
				if !errors.As(err, &bad) || !strings.Contains(bad.msg, tc.bad) {
					t.Fatalf("got %v, want BAD %q", err, tc.bad)
				}
				if conts != 0 {
					t.Fatal("a continuation was sent for a refused literal")
				}
			case tc.fail != "":
				if !errors.As(err, &fatal) || !strings.Contains(fatal.msg, tc.fail) {
					t.Fatalf("got %v, want fatal %q", err, tc.fail)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if cmd.tag != tc.tag || cmd.name != tc.cmd || !reflect.DeepEqual(cmd.args, tc.args) || conts != tc.conts {
					t.Fatalf("got %q %q %q (%d continuations)", cmd.tag, cmd.name, cmd.args, conts)
				}
			}
		})
	}
}

// fakeIMAPUpstream gives the local side one end of a pipe; the test holds
// the other, as the upstream server.
type fakeIMAPUpstream struct {
	err    error
	caps   []string
	server chan net.Conn
}

func (f *fakeIMAPUpstream) Login(context.Context) (net.Conn, []string, error) {
	if f.err != nil {
		return nil, nil, f.err
	}
	a, b := net.Pipe()
	f.server <- b
	return a, f.caps, nil
}

// serveLocal serves s (a listener of any protocol) on a loopback port
// until the test ends.
func serveLocal(t *testing.T, s interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return l.Addr().String()
}

// client is a test's line-oriented view of a local session.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (c *client) send(s string) {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads lines until one starts with prefix.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, prefix) {
			return l
		}
		if !strings.HasPrefix(l, "* ") && !strings.HasPrefix(prefix, "*") {
			c.t.Fatalf("got %q, want %q...", l, prefix)
		}
	}
}

func startIMAP(t *testing.T, up IMAPUpstream, o MailboxOptions) (*IMAPServer, func() *client) {
	s := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{up}, Users: []LocalUser{{Name: "app", Username: "joe", Password: `pa ss"w\d`}}}}, o)
	s.failureDelay = 0
	addr := serveLocal(t, &s.sessions)
	return s, func() *client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cl := &client{t: t, c: c, r: bufio.NewReader(c)}
		if g := cl.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1 ") {
			t.Fatalf("greeting %q", g)
		}
		return cl
	}
}

func TestIMAPLoginFormsThenRelayBothWays(t *testing.T) {
	up := &fakeIMAPUpstream{server: make(chan net.Conn, 1), caps: []string{"IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "IDLE", "MOVE", "STARTTLS"}}
	_, dial := startIMAP(t, up, MailboxOptions{})
	for _, login := range []struct{ name, send, then string }{
		{"quoted", `a1 LOGIN joe "pa ss\"w\\d"` + "\r\n", ""},
		{"literal", "a1 LOGIN {3}\r\n", "joe {9}\r\npa ss\"w\\d\r\n"},
		{"literal+", "a1 LOGIN {3+}\r\njoe {9+}\r\npa ss\"w\\d\r\n", ""},
		{"AUTHENTICATE PLAIN with initial response", "a1 AUTHENTICATE PLAIN AGpvZQBwYSBzcyJ3XGQ=\r\n", ""},
		{"AUTHENTICATE PLAIN after +", "a1 AUTHENTICATE PLAIN\r\n", "AGpvZQBwYSBzcyJ3XGQ=\r\n"},
	} {
		t.Run(login.name, func(t *testing.T) {
			c := dial()
			c.t = t
			c.send(login.send)
			if login.then != "" {
				if l := c.line(); !strings.HasPrefix(l, "+") {
					t.Fatalf("no continuation: %q", l)
				}
				c.send(login.then)
				if strings.Count(login.then, "{") > 0 { // the second literal
					if l := c.line(); !strings.HasPrefix(l, "+") {
						t.Fatalf("no continuation: %q", l)
					}
				}
			}
			ok := c.expect("a1 ")
			if ok != "a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in" {
				t.Fatalf("login reply %q", ok)
			}
			srv := <-up.server
			// Both ways, unchanged.
			c.send("a2 IDLE\r\n")
			sr := bufio.NewReader(srv)
			if l, _ := sr.ReadString('\n'); l != "a2 IDLE\r\n" {
				t.Fatalf("upstream got %q", l)
			}
			io.WriteString(srv, "+ idling\r\n* 3 EXISTS\r\n")
			if l := c.line(); l != "+ idling" {
				t.Fatalf("client got %q", l)
			}
			c.line()
			srv.Close() // the upstream hangs up: the client's side closes too
			c.c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.r.ReadByte(); err != io.EOF {
				t.Fatalf("local side not closed with the upstream: %v", err)
			}
		})
	}
}

func TestIMAPRefusalsAndFailuresAreTold(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"token endpoint down", &upstream.Error{Profile: "p", Stage: "token", Err: &tokens.Error{Profile: "p", Err: errors.New("connection refused")}}, `a1 NO [UNAVAILABLE] profile "p": token: connection refused`},
		{"upstream refused the token", &upstream.Error{Profile: "p", Stage: "auth", Err: &upstream.RefusedError{Reply: "NO [AUTHENTICATIONFAILED] Authentication failed."}}, `a1 NO [AUTHENTICATIONFAILED] profile "p": upstream auth: server refused the login`},
		{"upstream unreachable", &upstream.Error{Profile: "p", Stage: "connect", Err: errors.New("dial tcp: connection refused")}, `a1 NO [UNAVAILABLE] profile "p": upstream connect: dial tcp: connection refused; try again later`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dial := startIMAP(t, &fakeIMAPUpstream{err: tc.err}, MailboxOptions{})
			c := dial()
			c.send("a1 LOGIN joe \"pa ss\\\"w\\\\d\"\r\n")
			if got := c.expect("a1 "); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
			c.send("a2 NOOP\r\n") // the session goes on: the app may retry
			c.expect("a2 OK")
		})
	}
}

func TestIMAPBadInputGetsClearErrors(t *testing.T) {
	_, dial := startIMAP(t, &fakeIMAPUpstream{err: errors.New("unused")}, MailboxOptions{})
	c := dial()
	for _, step := range []struct{ send, want string }{
		{"a1 SELECT INBOX\r\n", "a1 BAD SELECT is not valid before login"},
		{"a2 AUTHENTICATE CRAM-MD5\r\n", "a2 NO [CANNOT] Unsupported mechanism CRAM-MD5"},
		{"a3 AUTHENTICATE PLAIN\r\n*\r\n", "+ "},
		{"", "a3 BAD AUTHENTICATE cancelled"},
		{"a4 AUTHENTICATE PLAIN !!!\r\n", "a4 BAD invalid base64"},
		{"a5 LOGIN joe {4294967296}\r\n", "a5 BAD literal too large"},
		{"a6 LOGIN joe\r\n", "a6 BAD LOGIN takes a user name and a password"},
		{"\x00\x01\xff\xfe junk\r\n", "* BAD expected: tag"},
		{"a7 STARTTLS\r\n", "a7 BAD STARTTLS is not available"},
		{"a8 LOGIN joe wrong\r\n", "a8 NO [AUTHENTICATIONFAILED] Invalid user name or password"},
		{"a9 LOGIN joe wrong\r\n", "a9 NO [AUTHENTICATIONFAILED]"},
		{"a10 LOGIN nobody wrong\r\n", "a10 NO [AUTHENTICATIONFAILED]"},
		{"", "* BYE Too many failed logins"},
	} {
		if step.send != "" {
			c.send(step.send)
		}
		if got := c.line(); !strings.HasPrefix(got, step.want) {
			t.Fatalf("after %q: got %q, want %q", step.send, got, step.want)
		}
	}
	c = dial()
	// The server answers and closes before it has read it all: write in the
	// background, where a reset is expected.
	go io.WriteString(c.c, "a1 LOGIN joe "+strings.Repeat("x", 1<<20)+"\r\n")
	if got := c.line(); got != "* BYE line too long" {
		t.Fatalf("got %q", got)
	}
}

func TestIMAPLoginDisabledUntilTLSWhenRequired(t *testing.T) {
	_, dial := startIMAP(t, &fakeIMAPUpstream{err: errors.New("unused")}, MailboxOptions{RequireTLS: true})
	c := dial()
	c.send("a1 CAPABILITY\r\n")
	if got := c.line(); !strings.Contains(got, "LOGINDISABLED") || strings.Contains(got, "AUTH=PLAIN") {
		t.Fatalf("capabilities %q", got)
	}
	c.expect("a1 OK")
	c.send("a2 LOGIN joe \"pa ss\\\"w\\\\d\"\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a2 NO [PRIVACYREQUIRED]") {
		t.Fatalf("got %q", got)
	}
}

// FuzzIMAPPreLogin feeds arbitrary client input to a session before login:
// it must neither panic nor hang, and a successful login must relay.
func FuzzIMAPPreLogin(f *testing.F) {
	for _, seed := range []string{
		"a1 LOGIN joe \"pa ss\\\"w\\\\d\"\r\na2 NOOP\r\n",
		"a1 LOGIN {3}\r\njoe {9}\r\npa ss\"w\\d\r\n",
		"a1 LOGIN {3+}\r\njoe {4294967296+}\r\n",
		"a1 AUTHENTICATE PLAIN\r\nAGpvZQBwYSBzcyJ3XGQ=\r\n",
		"a1 AUTHENTICATE PLAIN =\r\n",
		"a1 ID (\"name\" {3}\r\nabc)\r\na2 CAPABILITY\r\na3 LOGOUT\r\n",
		"\x00\xff{\r\n\"\\\r\n",
	} {
		f.Add([]byte(seed))
	}
	up := &fakeIMAPUpstream{server: make(chan net.Conn, 1), caps: []string{"IMAP4rev1"}}
	s := NewIMAPServer([]IMAPProfile{{Name: "p", Backend: RelayIMAP{up}, Users: []LocalUser{{Username: "joe", Password: `pa ss"w\d`}}}}, MailboxOptions{IdleTimeout: time.Second})
	s.failureDelay = 0
	f.Fuzz(func(t *testing.T, in []byte) {
		runFuzzSession(t, in, up.server, func(c net.Conn) { g := guarded(c); s.serve(context.Background(), g, g, &activity{}) })
	})
}

// runFuzzSession serves one session on a pipe fed with in, reading all the
// server writes, and checks it ends once the input is exhausted.
func runFuzzSession(t *testing.T, in []byte, upstreams chan net.Conn, serve func(net.Conn)) {
	local, remote := net.Pipe()
	done := make(chan struct{})
	go func() { serve(local); local.Close(); close(done) }()
	go io.Copy(io.Discard, remote)
	remote.SetWriteDeadline(time.Now().Add(2 * time.Second))
	remote.Write(in)
	remote.Close()
	select {
	case <-done:
	case up := <-upstreams:
		up.Close()
		<-done
	case <-time.After(5 * time.Second):
		t.Fatal("session did not end after its input did")
	}
	select {
	case up := <-upstreams:
		up.Close()
	default:
	}
}
