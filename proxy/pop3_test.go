package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

type fakePOP3Upstream struct {
	err    error
	server chan net.Conn
}

func (f *fakePOP3Upstream) Login(context.Context) (net.Conn, error) {
	if f.err != nil {
		return nil, f.err
	}
	a, b := net.Pipe()
	f.server <- b
	return a, nil
}

func startPOP3(t *testing.T, up POP3Upstream) func() *client {
	s := NewPOP3Server([]POP3Profile{{Name: "p", Backend: RelayPOP3{up}, Users: []LocalUser{{Username: "joe", Password: "pä ss"}}}}, MailboxOptions{})
	s.failureDelay = 0
	addr := serveLocal(t, &s.sessions)
	return func() *client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cl := &client{t: t, c: c, r: bufio.NewReader(c)}
		if g := cl.line(); g != "+OK mailproxy POP3 ready" {
			t.Fatalf("greeting %q", g)
		}
		return cl
	}
}

func TestPOP3LoginFormsThenRelay(t *testing.T) {
	up := &fakePOP3Upstream{server: make(chan net.Conn, 1)}
	dial := startPOP3(t, up)
	for _, login := range []struct {
		name  string
		steps [][2]string // send, expected reply prefix
	}{
		{"USER/PASS", [][2]string{{"USER joe\r\n", "+OK"}, {"PASS pä ss\r\n", "+OK Logged in"}}},
		{"AUTH PLAIN with initial response", [][2]string{{"AUTH PLAIN AGpvZQBww6Qgc3M=\r\n", "+OK Logged in"}}},
		{"AUTH PLAIN after +", [][2]string{{"AUTH PLAIN\r\n", "+ "}, {"AGpvZQBww6Qgc3M=\r\n", "+OK Logged in"}}},
	} {
		t.Run(login.name, func(t *testing.T) {
			c := dial()
			c.t = t
			for _, st := range login.steps {
				c.send(st[0])
				if got := c.line(); !strings.HasPrefix(got, st[1]) {
					t.Fatalf("after %q: got %q", st[0], got)
				}
			}
			srv := <-up.server
			c.send("STAT\r\n")
			if l, _ := bufio.NewReader(srv).ReadString('\n'); l != "STAT\r\n" {
				t.Fatalf("upstream got %q", l)
			}
			io.WriteString(srv, "+OK 2 320\r\n")
			if l := c.line(); l != "+OK 2 320" {
				t.Fatalf("client got %q", l)
			}
			srv.Close()
		})
	}
}

func TestPOP3ErrorsUseRFC3206Codes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"token failure", &upstream.Error{Profile: "p", Stage: "token", Err: &tokens.Error{Profile: "p", Err: errors.New("HTTP 503")}}, `-ERR [SYS/TEMP] profile "p": token: HTTP 503`},
		{"refused", &upstream.Error{Profile: "p", Stage: "auth", Err: &upstream.RefusedError{Reply: "-ERR [AUTH] Authentication failed."}}, `-ERR [AUTH] profile "p": upstream auth: server refused the login: -ERR [AUTH] Authentication failed.`},
		{"unreachable", &upstream.Error{Profile: "p", Stage: "tls", Err: errors.New("certificate signed by unknown authority")}, `-ERR [SYS/TEMP] profile "p": upstream tls: certificate signed by unknown authority`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startPOP3(t, &fakePOP3Upstream{err: tc.err})()
			c.send("USER joe\r\nPASS pä ss\r\n")
			c.line()
			if got := c.line(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	c := startPOP3(t, &fakePOP3Upstream{err: errors.New("unused")})()
	for _, step := range [][2]string{
		{"CAPA\r\n", "+OK Capability list follows"},
		{"", "IMPLEMENTATION mailproxy"}, {"", "USER"}, {"", "SASL PLAIN"}, {"", "."},
		{"AUTH\r\n", "+OK"}, {"", "PLAIN"}, {"", "."},
		{"STAT\r\n", "-ERR STAT is not valid before login"},
		{"PASS x\r\n", "-ERR USER first"},
		{"AUTH CRAM-MD5\r\n", "-ERR Unsupported mechanism CRAM-MD5"},
		{"AUTH PLAIN\r\n", "+ "}, {"*\r\n", "-ERR AUTH cancelled"},
		{"STLS\r\n", "-ERR STLS is not available"},
		{"USER joe\r\n", "+OK"}, {"PASS wrong\r\n", "-ERR [AUTH] Invalid user name or password"},
	} {
		if step[0] != "" {
			c.send(step[0])
		}
		if got := c.line(); !strings.HasPrefix(got, step[1]) {
			t.Fatalf("after %q: got %q, want %q", step[0], got, step[1])
		}
	}
	// Answered and closed before it is all read: write in the background.
	go io.WriteString(c.c, "USER "+strings.Repeat("x", 1<<20)+"\r\n")
	if got := c.line(); got != "-ERR line too long" {
		t.Fatalf("endless line: got %q", got)
	}
}

// FuzzPOP3PreLogin feeds arbitrary client input to a POP3 session before
// login: no panic, no hang.
func FuzzPOP3PreLogin(f *testing.F) {
	for _, seed := range []string{
		"USER joe\r\nPASS pä ss\r\nSTAT\r\n",
		"CAPA\r\nAUTH\r\nAUTH PLAIN\r\n*\r\nQUIT\r\n",
		"AUTH PLAIN AGpvZQBww6Qgc3M=\r\n",
		"AUTH PLAIN =\r\nUSER\r\nPASS\r\n\x00\xff\r\n",
	} {
		f.Add([]byte(seed))
	}
	up := &fakePOP3Upstream{server: make(chan net.Conn, 1)}
	s := NewPOP3Server([]POP3Profile{{Name: "p", Backend: RelayPOP3{up}, Users: []LocalUser{{Username: "joe", Password: "pä ss"}}}}, MailboxOptions{IdleTimeout: time.Second})
	s.failureDelay = 0
	f.Fuzz(func(t *testing.T, in []byte) {
		runFuzzSession(t, in, up.server, func(c net.Conn) { g := guarded(c); s.serve(context.Background(), g, g, &activity{}) })
	})
}
