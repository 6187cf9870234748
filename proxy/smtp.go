package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Sender delivers messages for one profile: upstream SMTP or Graph.
type Sender interface {
	// Begin starts a transaction (MAIL FROM).
	Begin(ctx context.Context, from string, opts *smtp.MailOptions) (Transaction, error)
}

// Transaction is one message on its way upstream. A context that ends
// ends the call (and the transaction).
type Transaction interface {
	Rcpt(ctx context.Context, to string, opts *smtp.RcptOptions) error
	// Data returns nil only once the upstream has accepted the message.
	Data(ctx context.Context, r io.Reader) error
	// Abort ends the transaction without a message.
	Abort()
}

// SMTPProfile is a profile served by an SMTP listener.
type SMTPProfile struct {
	Name   string
	Sender Sender
	// Users are the local logins; with none, the listener takes mail
	// without AUTH (loopback only, checked by config).
	Users []LocalUser
}

// SMTPOptions configure one SMTP listener.
type SMTPOptions struct {
	Profiles []SMTPProfile
	// TLSConfig enables STARTTLS, or with ImplicitTLS, TLS from the start.
	TLSConfig   *tls.Config
	ImplicitTLS bool
	// RequireTLS refuses AUTH before STARTTLS.
	RequireTLS      bool
	MaxMessageBytes int64
	// Domain is the name in the greeting (default "mailproxy").
	Domain string
	// Limits bound connections; LoginTimeout applies to listeners with
	// local logins.
	Limits   Limits
	Logger   *slog.Logger
	Observer Observer
}

// SMTPServer is a local SMTP listener.
type SMTPServer struct {
	srv          *smtp.Server
	o            SMTPOptions
	users        *Users[*SMTPProfile]
	noAuth       *SMTPProfile
	implicit     bool
	failureDelay time.Duration

	mu        sync.Mutex
	listeners []*guardedListener
	closing   bool
	shutdown  context.Context // ends when Shutdown starts
	stop      context.CancelFunc
}

// NewSMTPServer builds a server for the given profiles.
func NewSMTPServer(o SMTPOptions) *SMTPServer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Domain == "" {
		o.Domain = "mailproxy"
	}
	o.Observer = observerOr(o.Observer)
	s := &SMTPServer{o: o, users: NewUsers[*SMTPProfile](), implicit: o.ImplicitTLS, failureDelay: failureDelay}
	s.shutdown, s.stop = context.WithCancel(context.Background())
	for i := range o.Profiles {
		p := &o.Profiles[i]
		if len(p.Users) == 0 {
			s.noAuth = p
		}
		for _, u := range p.Users {
			s.users.Add(u, p)
		}
	}
	srv := smtp.NewServer(s)
	srv.Domain = o.Domain
	srv.MaxMessageBytes = o.MaxMessageBytes
	srv.MaxRecipients = 1000
	srv.MaxLineLength = 4000 // RFC 5321 says 1000; be lenient with old apps, but bounded
	// Per command once logged in; before, the login deadline bounds the
	// whole login (guardedConn).
	srv.ReadTimeout = 10 * time.Minute
	srv.WriteTimeout = 2 * time.Minute
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = !o.RequireTLS
	if !o.ImplicitTLS {
		srv.TLSConfig = o.TLSConfig
	}
	srv.ErrorLog = slogLogger{o.Logger}
	s.srv = srv
	return s
}

// Serve accepts connections on l until Shutdown or Close.
func (s *SMTPServer) Serve(l net.Listener) error {
	limits := s.o.Limits
	if s.noAuth != nil {
		limits.LoginTimeout = 0 // nobody logs in
	} else if limits.LoginTimeout <= 0 {
		limits.LoginTimeout = DefaultLoginTimeout
	}
	var implicit *tls.Config
	if s.implicit {
		implicit = s.o.TLSConfig
	}
	g := guard(l, "smtp", limits, func(reason string) string {
		return "421 4.7.0 mailproxy: " + reason + ": try again later"
	}, implicit, s.o.Logger)
	s.mu.Lock()
	s.listeners = append(s.listeners, g)
	s.mu.Unlock()
	l = g
	if s.implicit {
		l = tls.NewListener(l, s.o.TLSConfig)
	} else {
		l = lineListener{l}
	}
	err := s.srv.Serve(l)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes every connection that is not in the
// middle of a message (a MAIL still waiting for its upstream or token is
// abandoned: the app keeps the message), waits for the messages in flight
// until ctx ends, then closes what is left.
func (s *SMTPServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	listeners := s.listeners
	s.mu.Unlock()
	s.stop()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	for _, g := range listeners {
		g.closeIdle()
	}
	err := <-done
	if err != nil {
		s.srv.Close()
	}
	return err
}

// NewSession implements smtp.Backend.
func (s *SMTPServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss := &smtpSession{s: s, conn: c, gc: guardedOf(c.Conn()), remote: c.Conn().RemoteAddr().String(), start: time.Now()}
	ss.life, ss.end = context.WithCancel(context.Background())
	ss.ctx, ss.cancel = context.WithCancel(ss.life)
	ss.stopAfter = context.AfterFunc(s.shutdown, ss.cancel)
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "mailproxy is shutting down: try again later"}
	}
	if s.noAuth != nil {
		ss.bind(s.noAuth, "")
	}
	return ss, nil
}

type smtpSession struct {
	s    *SMTPServer
	conn *smtp.Conn
	gc   *guardedConn // under TLS, if any
	// life ends with the session; ctx also when shutdown starts.
	life      context.Context
	end       context.CancelFunc
	ctx       context.Context
	cancel    context.CancelFunc
	stopAfter func() bool
	remote    string
	profile   *SMTPProfile
	login     string
	failures  int
	txn       Transaction
	from      string
	rcpts     int
	size      int64
	relayed   int64 // bytes of the messages the upstream accepted
	start     time.Time
	messages  int // relayed
	refused   int // not relayed
}

var _ smtp.AuthSession = (*smtpSession)(nil)

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.s.users.Len() == 0 {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(username, password string) error {
		log := ss.s.o.Logger.With("proto", "smtp", "remote", ss.remote, "user", username)
		addr := ss.addr()
		if wait, ok := ss.s.o.Limits.Logins.Try(addr); !ok {
			log.Warn("local login refused: too many failed logins from this address", "retry_in", wait)
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
				Message: fmt.Sprintf("Too many failed logins from %s: try again in %s", addr, wait)}
		}
		p, label, err := ss.s.users.Check(username, password)
		if err != nil {
			ss.failures++
			log.Warn("local login failed", "failures", ss.failures)
			sleep(ss.ctx, ss.s.failureDelay)
			if ss.failures >= maxLoginFailures && ss.gc != nil {
				ss.gc.closeAfterWrite.Store(true) // once the 535 is out
				return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid; too many failed logins: closing"}
			}
			return smtp.ErrAuthFailed
		}
		ss.s.o.Limits.Logins.Refund(addr)
		if ss.gc != nil {
			ss.gc.LoggedIn()
		}
		ss.bind(p, label)
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return check(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// addr is the client's address, for the failed-login limit.
func (ss *smtpSession) addr() netip.Addr {
	if ss.gc != nil {
		return ss.gc.addr
	}
	ap, _ := netip.ParseAddrPort(ss.remote)
	return ap.Addr().Unmap()
}

func (ss *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	if ss.profile == nil {
		return smtp.ErrAuthRequired
	}
	if ss.ctx.Err() != nil {
		if ss.gc != nil {
			ss.gc.closeAfterWrite.Store(true)
		}
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "mailproxy is shutting down: try again later"}
	}
	txn, err := ss.profile.Sender.Begin(ss.ctx, from, opts)
	if err != nil {
		ss.s.o.Logger.Warn("upstream refused MAIL", "profile", ss.profile.Name, "remote", ss.remote, "err", err)
		ss.s.o.Observer.Failed("smtp", ss.profile.Name, err)
		return smtpReply(err)
	}
	ss.txn, ss.from, ss.rcpts = txn, from, 0
	return nil
}

func (ss *smtpSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.txn == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if err := ss.txn.Rcpt(ss.ctx, to, opts); err != nil {
		return smtpReply(err)
	}
	ss.rcpts++
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	if ss.txn == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	start := time.Now()
	if lc, ok := ss.conn.Conn().(*lineConn); ok { // not after STARTTLS
		m := lc.message(ss.s.o.MaxMessageBytes, ss.s.srv.MaxLineLength)
		defer m.drain()
		r = m
	}
	cr := &countingReader{r: r}
	// A message in flight may finish during a graceful shutdown: its
	// connection is left open and its context ends only when the session
	// is closed.
	ss.busy(true)
	err := ss.txn.Data(ss.life, cr)
	ss.busy(false)
	ss.txn = nil
	log := ss.s.o.Logger.With("proto", "smtp", "profile", ss.profile.Name, "login", ss.login, "remote", ss.remote,
		"rcpts", ss.rcpts, "bytes", cr.n, "ms", time.Since(start).Milliseconds())
	if err != nil {
		log.Warn("message not relayed", "err", err)
		ss.s.o.Observer.Failed("smtp", ss.profile.Name, err)
		ss.refused++
		return smtpReply(err)
	}
	log.Info("message relayed")
	ss.s.o.Observer.Relayed(ss.profile.Name, cr.n, time.Since(start))
	ss.relayed += cr.n
	ss.messages++
	return nil
}

func (ss *smtpSession) Reset() {
	if ss.txn != nil {
		ss.txn.Abort()
		ss.txn = nil
	}
}

// bind makes the session the profile's.
func (ss *smtpSession) bind(p *SMTPProfile, login string) {
	if ss.profile != nil {
		ss.s.o.Observer.SessionEnded("smtp", ss.profile.Name, ss.relayed, 0)
	}
	ss.profile, ss.login, ss.relayed = p, login, 0
	ss.s.o.Observer.SessionStarted("smtp", p.Name)
}

func (ss *smtpSession) Logout() error {
	d := time.Since(ss.start).Round(time.Millisecond)
	if ss.profile != nil {
		ss.s.o.Observer.SessionEnded("smtp", ss.profile.Name, ss.relayed, 0)
		outcome := "ok"
		if ss.refused > 0 {
			outcome = "refused"
		}
		ss.s.o.Logger.Info("session ended", "proto", "smtp", "profile", ss.profile.Name, "login", ss.login, "remote", ss.remote,
			"outcome", outcome, "messages", ss.messages, "refused", ss.refused, "bytes_up", ss.relayed, "duration", d)
	} else {
		ss.s.o.Logger.Debug("session ended", "proto", "smtp", "remote", ss.remote, "outcome", "no_login", "duration", d)
	}
	ss.Reset()
	ss.stopAfter()
	ss.end()
	return nil
}

// busy marks the connection as carrying a message (or not).
func (ss *smtpSession) busy(b bool) {
	if ss.gc != nil {
		ss.gc.busy.Store(b)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// loginServer is the server side of SASL LOGIN (draft-murchison-sasl-login):
// "Username:" and "Password:" prompts, the username possibly sent with the
// command (.NET, Python). go-sasl only has the client side.
type loginServer struct {
	check    func(username, password string) error
	username *string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch {
	case l.username == nil && response == nil:
		return []byte("Username:"), false, nil
	case l.username == nil:
		u := string(response)
		l.username = &u
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(*l.username, string(response))
	}
}

// slogLogger adapts slog to go-smtp's error logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(format string, v ...any) {
	s.l.Debug("smtp server", "msg", strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (s slogLogger) Println(v ...any) {
	s.l.Debug("smtp server", "msg", strings.TrimSpace(fmt.Sprintln(v...)))
}
