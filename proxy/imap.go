package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// IMAPBackend is a profile's side of its IMAP sessions: what a local login
// starts. An error is told to the client (imapLoginFailure); the
// capabilities go in the login's tagged OK.
type IMAPBackend interface {
	Login(ctx context.Context) (caps []string, s LoggedIn, err error)
}

// IMAPUpstream logs in to a profile's upstream IMAP server and returns the
// authenticated connection and the server's capabilities after login.
type IMAPUpstream interface {
	Login(ctx context.Context) (net.Conn, []string, error)
}

// RelayIMAP is the IMAPBackend that logs in upstream and relays every byte
// of the session.
type RelayIMAP struct{ Upstream IMAPUpstream }

// Login implements IMAPBackend.
func (r RelayIMAP) Login(ctx context.Context) ([]string, LoggedIn, error) {
	var up net.Conn
	var caps []string
	err := apart(func() (err error) { up, caps, err = r.Upstream.Login(ctx); return err })
	if err != nil {
		return nil, nil, err
	}
	return clientCapabilities(caps), relayed{up}, nil
}

// IMAPProfile is a profile served by an IMAP listener.
type IMAPProfile struct {
	Name    string
	Backend IMAPBackend
	Users   []LocalUser
}

// MailboxOptions configure an IMAP or POP3 listener.
type MailboxOptions struct {
	// TLSConfig enables STARTTLS (STLS), or with ImplicitTLS, TLS from the
	// first byte.
	TLSConfig   *tls.Config
	ImplicitTLS bool
	// RequireTLS refuses logins before STARTTLS (LOGINDISABLED).
	RequireTLS bool
	// IdleTimeout ends a relayed session quiet both ways for this long
	// (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	Limits      Limits
	Logger      *slog.Logger
	Observer    Observer
}

// IMAPServer is a local IMAP listener: it takes the app's login, logs in
// upstream with the profile's credential, then relays every byte.
type IMAPServer struct {
	sessions
	o     MailboxOptions
	users *Users[*IMAPProfile]
}

// NewIMAPServer builds a listener for profiles; the login picks the profile.
func NewIMAPServer(profiles []IMAPProfile, o MailboxOptions) *IMAPServer {
	s := &IMAPServer{o: o, users: profileUsers(profiles, func(p *IMAPProfile) []LocalUser { return p.Users })}
	s.sessions = sessions{proto: "imap", tls: o.TLSConfig, implicit: o.ImplicitTLS, log: o.Logger, serve: s.serve, idleTimeout: o.IdleTimeout,
		observer: o.Observer, limits: o.Limits, busy: func(reason string) string { return "* BYE [UNAVAILABLE] mailproxy: " + reason + ": try again later" }}
	s.sessions.init()
	return s
}

type imapSession struct {
	s        *IMAPServer
	conn     net.Conn
	gc       *guardedConn // under conn's TLS, if any
	r        *bufio.Reader
	isTLS    bool
	remote   string
	failures int
}

func (s *IMAPServer) serve(ctx context.Context, conn net.Conn, gc *guardedConn, act *activity) {
	_, isTLS := conn.(*tls.Conn)
	ss := &imapSession{s: s, conn: conn, gc: gc, r: bufio.NewReader(conn), isTLS: isTLS, remote: conn.RemoteAddr().String()}
	// Reads never wait past the login deadline (guardedConn), however
	// many commands come before it.
	conn.SetDeadline(time.Now().Add(s.limits.LoginTimeout))
	if ss.send("* OK [CAPABILITY %s] mailproxy ready", ss.capabilities()) != nil {
		return
	}
	for {
		conn.SetDeadline(time.Now().Add(s.limits.LoginTimeout))
		ir := &imapReader{r: ss.r, ready: func() error { return ss.send("+ Ready for literal data") }}
		cmd, err := ir.read()
		act.touch()
		var bad *errBad
		var fatal *errFatal
		switch {
		case errors.As(err, &bad):
			ss.send("%s BAD %s", bad.tag, bad.msg)
			continue
		case errors.As(err, &fatal):
			ss.bye("* BYE %s", fatal.msg)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			ss.bye("* BYE Autologout: no login within %s", s.limits.LoginTimeout)
			return
		case err != nil:
			return
		}
		if done := ss.handle(ctx, cmd, act); done {
			return
		}
	}
}

// capabilities are mailproxy's own, before login.
func (ss *imapSession) capabilities() string {
	caps := "IMAP4rev1 LITERAL+ SASL-IR ID"
	if ss.s.o.TLSConfig != nil && !ss.isTLS {
		caps += " STARTTLS"
	}
	if ss.loginDisabled() {
		return caps + " LOGINDISABLED"
	}
	return caps + " AUTH=PLAIN"
}

func (ss *imapSession) loginDisabled() bool { return ss.s.o.RequireTLS && !ss.isTLS }

// handle runs one command; done ends the session.
func (ss *imapSession) handle(ctx context.Context, cmd *imapCommand, act *activity) (done bool) {
	tag := cmd.tag
	switch cmd.name {
	case "CAPABILITY":
		ss.send("* CAPABILITY %s", ss.capabilities())
		return ss.send("%s OK CAPABILITY completed", tag) != nil
	case "NOOP":
		return ss.send("%s OK NOOP completed", tag) != nil
	case "ID":
		ss.send(`* ID ("name" "mailproxy")`)
		return ss.send("%s OK ID completed", tag) != nil
	case "LOGOUT":
		ss.send("* BYE Logging out")
		ss.send("%s OK LOGOUT completed", tag)
		return true
	case "STARTTLS":
		return ss.startTLS(tag)
	case "LOGIN":
		if len(cmd.args) != 2 {
			return ss.send("%s BAD LOGIN takes a user name and a password", tag) != nil
		}
		return ss.login(ctx, tag, cmd.args[0], cmd.args[1], act)
	case "AUTHENTICATE":
		return ss.authenticate(ctx, tag, cmd.args, act)
	}
	return ss.send("%s BAD %s is not valid before login: log in with LOGIN or AUTHENTICATE PLAIN", tag, oneLine(cmd.name)) != nil
}

func (ss *imapSession) startTLS(tag string) bool {
	if ss.s.o.TLSConfig == nil || ss.isTLS {
		return ss.send("%s BAD %s", tag, noTLSHint("STARTTLS", ss.isTLS)) != nil
	}
	if ss.send("%s OK Begin TLS negotiation now", tag) != nil {
		return true
	}
	// Anything the client sent after STARTTLS, before the handshake, is
	// dropped: it would be a command injected in the clear (RFC 3207 §6).
	tc := tls.Server(ss.conn, ss.s.o.TLSConfig)
	tc.SetDeadline(time.Now().Add(ss.s.limits.LoginTimeout))
	if err := tc.Handshake(); err != nil {
		ss.s.log.Debug("local TLS handshake failed", "proto", "imap", "remote", ss.remote, "err", err)
		return true
	}
	ss.conn, ss.r, ss.isTLS = tc, bufio.NewReader(tc), true
	return false
}

func (ss *imapSession) authenticate(ctx context.Context, tag string, args []string, act *activity) bool {
	if len(args) == 0 || len(args) > 2 {
		return ss.send("%s BAD AUTHENTICATE takes a mechanism and an optional initial response", tag) != nil
	}
	if !strings.EqualFold(args[0], "PLAIN") {
		return ss.send("%s NO [CANNOT] Unsupported mechanism %s: use PLAIN or LOGIN with the local password", tag, oneLine(args[0])) != nil
	}
	if ss.loginDisabled() {
		return ss.send("%s NO [PRIVACYREQUIRED] Log in after STARTTLS", tag) != nil
	}
	var resp string
	if len(args) == 2 {
		resp = args[1]
	} else {
		if ss.send("+ ") != nil {
			return true
		}
		line, err := readBoundedLine(ss.r, maxPreauthLine)
		if err != nil {
			return true
		}
		resp = string(line)
		if resp == "*" {
			return ss.send("%s BAD AUTHENTICATE cancelled", tag) != nil
		}
	}
	if resp == "=" {
		resp = ""
	}
	user, pass, err := decodePlain(resp)
	if err != nil {
		return ss.send("%s BAD %v", tag, err) != nil
	}
	return ss.login(ctx, tag, user, pass, act)
}

// decodePlain decodes a SASL PLAIN response (RFC 4616). An authorization
// identity other than the user is refused: mailproxy has no proxy users.
func decodePlain(b64 string) (user, pass string, err error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", "", errors.New("invalid base64 in the PLAIN response")
	}
	parts := bytes.Split(raw, []byte{0})
	if len(parts) != 3 {
		return "", "", errors.New("a PLAIN response is authzid NUL user NUL password")
	}
	if len(parts[0]) > 0 && !bytes.Equal(parts[0], parts[1]) {
		return "", "", errors.New("authorization identity must be empty or the user")
	}
	return string(parts[1]), string(parts[2]), nil
}

// login checks the local password, logs in upstream and then relays the
// session until it ends.
func (ss *imapSession) login(ctx context.Context, tag, user, pass string, act *activity) bool {
	log := ss.s.log.With("proto", "imap", "remote", ss.remote, "user", user)
	if ss.loginDisabled() {
		return ss.send("%s NO [PRIVACYREQUIRED] Log in after STARTTLS", tag) != nil
	}
	if wait, ok := ss.s.limits.Logins.Try(ss.gc.addr); !ok {
		log.Warn("local login refused: too many failed logins from this address", "retry_in", wait)
		return ss.send("%s NO [UNAVAILABLE] Too many failed logins from %s: try again in %s", tag, ss.gc.addr, wait) != nil
	}
	p, label, err := ss.s.users.Check(user, pass)
	if err != nil {
		ss.failures++
		log.Warn("local login failed", "failures", ss.failures)
		sleep(ctx, ss.s.failureDelay) // the address's budget counted it in Try
		ss.send("%s NO [AUTHENTICATIONFAILED] Invalid user name or password", tag)
		if ss.failures >= maxLoginFailures {
			ss.bye("* BYE Too many failed logins")
			return true
		}
		return false
	}
	ss.s.limits.Logins.Refund(ss.gc.addr)
	log = log.With("profile", p.Name, "login", label)
	lctx, cancel := context.WithTimeout(ctx, upstreamLoginTimeout)
	start := time.Now()
	caps, li, err := p.Backend.Login(lctx)
	cancel()
	act.touch()
	if err != nil {
		code, text := imapLoginFailure(err)
		log.Warn("upstream login failed", "code", code, "err", err)
		ss.s.observer.Failed("imap", p.Name, err)
		return ss.send("%s NO [%s] %s", tag, code, oneLine(text)) != nil
	}
	ss.gc.LoggedIn()
	if len(caps) == 0 {
		caps = []string{"IMAP4rev1"}
	}
	if err := ss.send("%s OK [CAPABILITY %s] Logged in", tag, strings.Join(caps, " ")); err != nil {
		li.Close()
		return true
	}
	r := ss.r
	ss.r = nil
	ss.s.relayLoggedIn(ss.conn, r, li, act, log, p.Name, start)
	return true
}

// clientCapabilities are the upstream's capabilities after login, without
// the ones about logging in, which no longer apply.
func clientCapabilities(caps []string) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		u := strings.ToUpper(c)
		if strings.HasPrefix(u, "AUTH=") || u == "STARTTLS" || u == "LOGINDISABLED" || u == "SASL-IR" {
			continue
		}
		out = append(out, c)
	}
	return out
}

func (ss *imapSession) send(format string, args ...any) error {
	_, err := fmt.Fprintf(ss.conn, format+"\r\n", args...)
	return err
}

// bye sends the session's last line, with a deadline of its own: the read
// deadline that ended the session must not keep it from the client.
func (ss *imapSession) bye(format string, args ...any) {
	ss.conn.SetWriteDeadline(time.Now().Add(byeTimeout))
	ss.send(format, args...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
