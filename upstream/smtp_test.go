package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// fakeSMTP is a server that answers EHLO and AUTH, then behaves as
// serve says once a client sends MAIL.
func fakeSMTP(t *testing.T, authReply string, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	return fakeSMTPWith(t, authReply, func() {}, serve)
}

// fakeSMTPWith is fakeSMTP that calls onAuth after each login it answers.
func fakeSMTPWith(t *testing.T, authReply string, onAuth func(), serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				io.WriteString(c, "220 fake ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
					case "EHLO":
						io.WriteString(c, "250-fake\r\n250 AUTH XOAUTH2\r\n")
					case "AUTH":
						io.WriteString(c, "334 \r\n")
						r.ReadString('\n')
						io.WriteString(c, authReply)
						onAuth()
					case "MAIL":
						io.WriteString(c, "250 2.1.0 ok\r\n")
						serve(c, r)
						return
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func smtpUp(addr string, timeout time.Duration) *SMTP {
	return NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", Timeout: timeout,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: staticToken(tok)}})
}

func TestSMTPUpstreamThatStopsReadingAfter354FailsInBoundedTime(t *testing.T) {
	addr := fakeSMTP(t, "235 ok\r\n", func(c net.Conn, r *bufio.Reader) {
		r.ReadString('\n') // RCPT
		io.WriteString(c, "250 ok\r\n")
		r.ReadString('\n') // DATA
		io.WriteString(c, "354 go ahead\r\n")
		time.Sleep(10 * time.Second) // and read nothing more
	})
	up := smtpUp(addr, 300*time.Millisecond)
	defer up.Close()
	ctx := context.Background()
	txn, err := up.Begin(ctx, "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Rcpt(ctx, "b@x", nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Far more than the socket buffers hold, so writes block.
	err = txn.Data(ctx, io.LimitReader(zeros{}, 64<<20))
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Data blocked for %v with a 300 ms timeout", took)
	}
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != Temporary || ue.Stage != StageSession {
		t.Fatalf("got %v, want a temporary session error", err)
	}
}

func TestSMTPUpstreamDataEndsWhenTheContextDoes(t *testing.T) {
	addr := fakeSMTP(t, "235 ok\r\n", func(c net.Conn, r *bufio.Reader) {
		r.ReadString('\n')
		io.WriteString(c, "250 ok\r\n")
		r.ReadString('\n')
		io.WriteString(c, "354 go ahead\r\n")
		time.Sleep(10 * time.Second)
	})
	up := smtpUp(addr, time.Minute)
	defer up.Close()
	txn, err := up.Begin(context.Background(), "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	txn.Rcpt(context.Background(), "b@x", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := txn.Data(ctx, io.LimitReader(zeros{}, 64<<20)); err == nil {
		t.Fatal("Data succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Data went on for %v after its context ended", took)
	}
}

func TestSMTPUpstream535IsARefusal(t *testing.T) {
	for _, tc := range []struct {
		reply string
		kind  Kind
	}{
		{"535 5.7.3 Authentication unsuccessful\r\n", Refused},
		{"454 4.7.0 Temporary authentication failure\r\n", Temporary},
	} {
		addr := fakeSMTP(t, tc.reply, nil)
		up := smtpUp(addr, time.Minute)
		_, err := up.Begin(context.Background(), "a@x", nil)
		up.Close()
		if KindOf(err) != tc.kind {
			t.Fatalf("%q: kind %v (%v), want %v", tc.reply, KindOf(err), err, tc.kind)
		}
		if tc.kind == Refused && !strings.Contains(err.Error(), "server refused the login: 535 5.7.3 Authentication unsuccessful") {
			t.Fatalf("refusal says %q", err)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// A session released while Close waits for the pool's QUITs (a reload
// retires the upstream while messages are in flight) is closed without a
// data race: go test -race failed here before.
func TestSMTPUpstreamSessionReleasedWhileClosing(t *testing.T) {
	addr := fakeSMTP(t, "235 ok\r\n", func(c net.Conn, r *bufio.Reader) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(strings.ToUpper(line), "QUIT") {
				time.Sleep(50 * time.Millisecond) // Close waits for this one
				io.WriteString(c, "221 bye\r\n")
				return
			}
			io.WriteString(c, "250 ok\r\n")
		}
	})
	up := smtpUp(addr, time.Minute)
	ctx := context.Background()
	pooled, err := up.Begin(ctx, "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	inUse, err := up.Begin(ctx, "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	pooled.Abort() // idle in the pool: Close says QUIT to it and waits
	closed := make(chan struct{})
	go func() { up.Close(); close(closed) }()
	time.Sleep(100 * time.Millisecond)
	inUse.Abort() // released after the pool's QUIT: closed, not pooled
	<-closed
	if n := len(up.idle); n != 0 {
		t.Fatalf("%d sessions pooled after Close", n)
	}
}

// A pooled session left idle for IdleTimeout is ended with QUIT, rather
// than held open until the server times it out.
func TestSMTPUpstreamEndsIdleSessions(t *testing.T) {
	quits := make(chan struct{}, 10)
	addr := fakeSMTP(t, "235 ok\r\n", func(c net.Conn, r *bufio.Reader) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(strings.ToUpper(line), "QUIT") {
				io.WriteString(c, "221 bye\r\n")
				quits <- struct{}{}
				return
			}
			io.WriteString(c, "250 ok\r\n")
		}
	})
	up := NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", IdleTimeout: 200 * time.Millisecond,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: staticToken(tok)}})
	defer up.Close()
	txn, err := up.Begin(context.Background(), "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	txn.Abort() // pooled
	select {
	case <-quits:
	case <-time.After(3 * time.Second):
		t.Fatal("an idle pooled session was not ended after IdleTimeout")
	}
	up.mu.Lock()
	n := len(up.idle)
	up.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sessions still pooled", n)
	}
}

// A pooled session is RSET before its next transaction only when the last
// one may still be open: a message the server took ended its own. (go-smtp
// says EHLO again after RSET; before, every message but a session's first
// waited for both.)
func TestSMTPUpstreamRSETOnlyAfterAnAbortedTransaction(t *testing.T) {
	verbs := make(chan string, 100)
	addr := fakeSMTP(t, "235 ok\r\n", func(c net.Conn, r *bufio.Reader) {
		verbs <- "MAIL"
		serveMessages(c, r, func(verb string) { verbs <- verb })
	})
	up := NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", MessagesPerSession: 10,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: staticToken(tok)}})
	defer up.Close()
	sendVia(t, up)
	sendVia(t, up)
	txn, err := up.Begin(context.Background(), "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	txn.Abort()
	sendVia(t, up)
	var got []string
	for len(got) < 12 {
		select {
		case v := <-verbs:
			got = append(got, v)
		case <-time.After(3 * time.Second):
			t.Fatalf("verbs so far: %v", got)
		}
	}
	want := "MAIL RCPT DATA MAIL RCPT DATA MAIL RSET EHLO MAIL RCPT DATA"
	if strings.Join(got, " ") != want {
		t.Fatalf("upstream got %v, want %s", got, want)
	}
}

// serveMessages answers what follows a MAIL: messages are taken, seen is
// told each verb after its reply, QUIT ends.
func serveMessages(c net.Conn, r *bufio.Reader, seen func(verb string)) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "DATA":
			io.WriteString(c, "354 go ahead\r\n")
			for l := ""; l != ".\r\n"; {
				if l, err = r.ReadString('\n'); err != nil {
					return
				}
			}
			io.WriteString(c, "250 2.0.0 queued\r\n")
		case "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
		seen(verb)
	}
}

// fakeSMTPCounting is a server that takes every message and tells auths
// of each login.
func fakeSMTPCounting(t *testing.T, auths chan<- struct{}) string {
	t.Helper()
	return fakeSMTPWith(t, "235 ok\r\n", func() { auths <- struct{}{} }, func(c net.Conn, r *bufio.Reader) {
		serveMessages(c, r, func(string) {})
	})
}

func sendVia(t *testing.T, up *SMTP) {
	t.Helper()
	ctx := context.Background()
	txn, err := up.Begin(ctx, "a@x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Rcpt(ctx, "b@x", nil); err != nil {
		t.Fatal(err)
	}
	if err := txn.Data(ctx, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
}

// When a session takes its second-last message, the next one is opened
// and logged in to without waiting for a message to need it; the session
// carries its last message, and the next message goes on the new one.
func TestSMTPUpstreamOpensTheNextSessionAhead(t *testing.T) {
	auths := make(chan struct{}, 10)
	addr := fakeSMTPCounting(t, auths)
	up := NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", MessagesPerSession: 3,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: staticToken(tok)}})
	defer up.Close()
	sendVia(t, up)
	<-auths
	sendVia(t, up) // the session's second-last
	select {
	case <-auths:
	case <-time.After(3 * time.Second):
		t.Fatal("no second session was opened before a message needed it")
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		up.mu.Lock()
		n := len(up.idle)
		up.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions pooled, want the first and the one opened ahead", n)
		}
	}
	sendVia(t, up) // the first session's last
	sendVia(t, up) // the second's first
	select {
	case <-auths:
		t.Fatal("a message opened a session of its own")
	case <-time.After(100 * time.Millisecond):
	}
	if n := up.Sessions(); n != 2 {
		t.Fatalf("%d sessions opened for 4 messages, want 2", n)
	}
	up.mu.Lock()
	sent := []int{}
	for _, sc := range up.idle {
		sent = append(sent, sc.sent)
	}
	up.mu.Unlock()
	if len(sent) != 1 || sent[0] != 1 {
		t.Fatalf("pooled sessions carried %v messages, want [1]: the first, having carried 3, is closed", sent)
	}
}

// Sessions released together, more of them than MaxIdle, are all kept when
// as many were in use at once: their senders will want them again.
func TestSMTPUpstreamKeepsASessionForEachRecentSender(t *testing.T) {
	auths := make(chan struct{}, 100)
	addr := fakeSMTPCounting(t, auths)
	up := NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", MessagesPerSession: 100, MaxIdle: 2,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: staticToken(tok)}})
	defer up.Close()
	var txns []*SMTPTransaction
	for range 6 {
		txn, err := up.Begin(context.Background(), "a@x", nil)
		if err != nil {
			t.Fatal(err)
		}
		txns = append(txns, txn)
	}
	for _, txn := range txns {
		txn.Abort()
	}
	up.mu.Lock()
	n := len(up.idle)
	up.mu.Unlock()
	if n != 6 {
		t.Fatalf("%d sessions pooled after 6 in use at once, want 6", n)
	}
	for range 6 {
		txn, err := up.Begin(context.Background(), "a@x", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer txn.Abort()
	}
	if n := up.Sessions(); n != 6 {
		t.Fatalf("%d sessions opened for 12 transactions 6 at a time, want 6", n)
	}
}

// switchableToken is a token source that starts failing as told.
type switchableToken struct {
	mu  sync.Mutex
	err error
}

func (s *switchableToken) Token(context.Context) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return &oauth2.Token{AccessToken: tok}, nil
}

func (s *switchableToken) fail(err error) { s.mu.Lock(); s.err = err; s.mu.Unlock() }

type signedOut struct{}

func (signedOut) Error() string      { return "the account is not signed in" }
func (signedOut) PersonNeeded() bool { return true }

// A session pooled (or opened ahead) before the account was signed out
// carries no more messages: the next one is told a person must sign in,
// and the pool is emptied. A temporary token failure leaves pooled
// sessions in use.
func TestSMTPUpstreamPooledSessionsEndWithTheSignIn(t *testing.T) {
	auths := make(chan struct{}, 10)
	addr := fakeSMTPCounting(t, auths)
	src := &switchableToken{}
	up := NewSMTP(SMTPOptions{Profile: "p", Addr: addr, TLS: "none", MessagesPerSession: 10,
		Auth: Auth{Mechanism: MechXOAUTH2, User: "u@x", Tokens: src}})
	defer up.Close()
	sendVia(t, up)
	src.fail(errors.New("token endpoint: 503"))
	sendVia(t, up) // on the pooled session
	src.fail(signedOut{})
	_, err := up.Begin(context.Background(), "a@x", nil)
	if KindOf(err) != PersonNeeded {
		t.Fatalf("a message after the sign-out: %v, want a person-needed error", err)
	}
	up.mu.Lock()
	n := len(up.idle)
	up.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sessions pooled after the sign-out", n)
	}
}
