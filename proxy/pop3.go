package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// POP3Backend is a profile's side of its POP3 sessions: what a local login
// starts. An error is told to the client (pop3LoginFailure).
type POP3Backend interface {
	Login(ctx context.Context) (LoggedIn, error)
}

// POP3Upstream logs in to a profile's upstream POP3 server and returns the
// authenticated connection (TRANSACTION state).
type POP3Upstream interface {
	Login(ctx context.Context) (net.Conn, error)
}

// RelayPOP3 is the POP3Backend that logs in upstream and relays every byte
// of the session.
type RelayPOP3 struct{ Upstream POP3Upstream }

// Login implements POP3Backend.
func (r RelayPOP3) Login(ctx context.Context) (LoggedIn, error) {
	var up net.Conn
	err := apart(func() (err error) { up, err = r.Upstream.Login(ctx); return err })
	if err != nil {
		return nil, err
	}
	return relayed{up}, nil
}

// POP3Profile is a profile served by a POP3 listener.
type POP3Profile struct {
	Name    string
	Backend POP3Backend
	Users   []LocalUser
}

// POP3Server is a local POP3 listener: it takes the app's USER/PASS or
// AUTH PLAIN, logs in upstream with the profile's credential, then relays
// every byte.
type POP3Server struct {
	sessions
	o     MailboxOptions
	users *Users[*POP3Profile]
	// served: every profile's maildrop is served by mailproxy (Graph), so
	// CAPA before login may say what it does after.
	served bool
}

// NewPOP3Server builds a listener for profiles; the login picks the profile.
func NewPOP3Server(profiles []POP3Profile, o MailboxOptions) *POP3Server {
	s := &POP3Server{o: o, users: profileUsers(profiles, func(p *POP3Profile) []LocalUser { return p.Users }), served: len(profiles) > 0}
	for _, p := range profiles {
		if _, ok := p.Backend.(ServePOP3); !ok {
			s.served = false
		}
	}
	s.sessions = sessions{proto: "pop3", tls: o.TLSConfig, implicit: o.ImplicitTLS, log: o.Logger, serve: s.serve, idleTimeout: o.IdleTimeout,
		observer: o.Observer, limits: o.Limits, busy: func(reason string) string { return "-ERR [SYS/TEMP] mailproxy: " + reason + ": try again later" }}
	s.sessions.init()
	return s
}

type pop3Session struct {
	s        *POP3Server
	conn     net.Conn
	gc       *guardedConn // under conn's TLS, if any
	r        *bufio.Reader
	isTLS    bool
	remote   string
	user     *string // after USER
	failures int
}

func (s *POP3Server) serve(ctx context.Context, conn net.Conn, gc *guardedConn, act *activity) {
	_, isTLS := conn.(*tls.Conn)
	ps := &pop3Session{s: s, conn: conn, gc: gc, r: bufio.NewReader(conn), isTLS: isTLS, remote: conn.RemoteAddr().String()}
	// No <timestamp> in the greeting: it would invite APOP (curl, Jakarta),
	// which needs the password in the clear on this side. Reads never wait
	// past the login deadline (guardedConn).
	conn.SetDeadline(time.Now().Add(s.limits.LoginTimeout))
	if ps.send("+OK mailproxy POP3 ready") != nil {
		return
	}
	for {
		conn.SetDeadline(time.Now().Add(s.limits.LoginTimeout))
		line, err := readBoundedLine(ps.r, maxPreauthLine)
		act.touch()
		var fatal *errFatal
		switch {
		case errors.As(err, &fatal):
			ps.bye("-ERR %s", fatal.msg)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			ps.bye("-ERR Autologout: no login within %s", s.limits.LoginTimeout)
			return
		case err != nil:
			return
		}
		verb, arg, _ := strings.Cut(string(line), " ")
		if done := ps.handle(ctx, strings.ToUpper(verb), arg, act); done {
			return
		}
	}
}

// handle runs one command; done ends the session.
func (ps *pop3Session) handle(ctx context.Context, verb, arg string, act *activity) (done bool) {
	tlsNeeded := ps.s.o.RequireTLS && !ps.isTLS
	switch verb {
	case "CAPA":
		caps := []string{"+OK Capability list follows", "IMPLEMENTATION mailproxy"}
		if ps.s.o.TLSConfig != nil && !ps.isTLS {
			caps = append(caps, "STLS")
		}
		if !tlsNeeded {
			caps = append(caps, "USER", "SASL PLAIN")
		}
		if ps.s.served {
			caps = append(caps, "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")
		}
		return ps.send("%s\r\n.", strings.Join(caps, "\r\n")) != nil
	case "QUIT":
		ps.send("+OK Bye")
		return true
	case "STLS":
		return ps.startTLS()
	case "USER", "PASS", "AUTH":
		if tlsNeeded {
			return ps.send("-ERR [AUTH] Log in after STLS") != nil
		}
	default:
		return ps.send("-ERR %s is not valid before login: log in with USER/PASS or AUTH PLAIN", oneLine(verb)) != nil
	}
	switch verb {
	case "USER":
		if arg == "" {
			return ps.send("-ERR USER takes a user name") != nil
		}
		ps.user = &arg
		return ps.send("+OK Send PASS") != nil
	case "PASS":
		if ps.user == nil {
			return ps.send("-ERR USER first") != nil
		}
		user := *ps.user
		ps.user = nil
		return ps.login(ctx, user, arg, act)
	}
	// AUTH
	mech, ir, _ := strings.Cut(arg, " ")
	switch {
	case mech == "":
		return ps.send("+OK\r\nPLAIN\r\n.") != nil
	case !strings.EqualFold(mech, "PLAIN"):
		return ps.send("-ERR Unsupported mechanism %s: use PLAIN or USER/PASS with the local password", oneLine(mech)) != nil
	}
	if ir == "" {
		if ps.send("+ ") != nil {
			return true
		}
		line, err := readBoundedLine(ps.r, maxPreauthLine)
		if err != nil {
			return true
		}
		if ir = string(line); ir == "*" {
			return ps.send("-ERR AUTH cancelled") != nil
		}
	}
	if ir == "=" {
		ir = ""
	}
	user, pass, err := decodePlain(ir)
	if err != nil {
		return ps.send("-ERR %v", err) != nil
	}
	return ps.login(ctx, user, pass, act)
}

func (ps *pop3Session) startTLS() bool {
	if ps.s.o.TLSConfig == nil || ps.isTLS {
		return ps.send("-ERR %s", noTLSHint("STLS", ps.isTLS)) != nil
	}
	if ps.send("+OK Begin TLS negotiation") != nil {
		return true
	}
	// What the client sent before the handshake is dropped (see IMAP).
	tc := tls.Server(ps.conn, ps.s.o.TLSConfig)
	tc.SetDeadline(time.Now().Add(ps.s.limits.LoginTimeout))
	if err := tc.Handshake(); err != nil {
		ps.s.log.Debug("local TLS handshake failed", "proto", "pop3", "remote", ps.remote, "err", err)
		return true
	}
	ps.conn, ps.r, ps.isTLS = tc, bufio.NewReader(tc), true
	return false
}

// login checks the local password, logs in upstream and then relays the
// session until it ends.
func (ps *pop3Session) login(ctx context.Context, user, pass string, act *activity) bool {
	log := ps.s.log.With("proto", "pop3", "remote", ps.remote, "user", user)
	if wait, ok := ps.s.limits.Logins.Try(ps.gc.addr); !ok {
		log.Warn("local login refused: too many failed logins from this address", "retry_in", wait)
		return ps.send("-ERR [SYS/TEMP] Too many failed logins from %s: try again in %s", ps.gc.addr, wait) != nil
	}
	p, label, err := ps.s.users.Check(user, pass)
	if err != nil {
		ps.failures++
		log.Warn("local login failed", "failures", ps.failures)
		sleep(ctx, ps.s.failureDelay) // the address's budget counted it in Try
		if ps.failures >= maxLoginFailures {
			ps.bye("-ERR [AUTH] Invalid user name or password; too many failed logins")
			return true
		}
		return ps.send("-ERR [AUTH] Invalid user name or password") != nil
	}
	ps.s.limits.Logins.Refund(ps.gc.addr)
	log = log.With("profile", p.Name, "login", label)
	lctx, cancel := context.WithTimeout(ctx, upstreamLoginTimeout)
	start := time.Now()
	li, err := p.Backend.Login(lctx)
	cancel()
	act.touch()
	if err != nil {
		reply := pop3LoginFailure(err)
		log.Warn("upstream login failed", "reply", reply, "err", err)
		ps.s.observer.Failed("pop3", p.Name, err)
		return ps.send("%s", reply) != nil
	}
	ps.gc.LoggedIn()
	if err := ps.send("+OK Logged in"); err != nil {
		li.Close()
		return true
	}
	r := ps.r
	ps.r = nil
	ps.s.relayLoggedIn(ps.conn, r, li, act, log, p.Name, start)
	return true
}

func (ps *pop3Session) send(format string, args ...any) error {
	_, err := fmt.Fprintf(ps.conn, format+"\r\n", args...)
	return err
}

// bye sends the session's last line, with a deadline of its own.
func (ps *pop3Session) bye(format string, args ...any) {
	ps.conn.SetWriteDeadline(time.Now().Add(byeTimeout))
	ps.send(format, args...)
}
