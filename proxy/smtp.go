package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Sender delivers messages for one profile: upstream SMTP or Graph.
type Sender interface {
	// Begin starts a transaction (MAIL FROM).
	Begin(ctx context.Context, from string, opts *smtp.MailOptions) (Transaction, error)
}

// Transaction is one message on its way upstream.
type Transaction interface {
	Rcpt(to string, opts *smtp.RcptOptions) error
	// Data returns nil only once the upstream has accepted the message.
	Data(r io.Reader) error
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
	Domain   string
	Logger   *slog.Logger
	Observer Observer
}

// SMTPServer is a local SMTP listener.
type SMTPServer struct {
	srv      *smtp.Server
	o        SMTPOptions
	users    *Users[*SMTPProfile]
	noAuth   *SMTPProfile
	implicit bool
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
	s := &SMTPServer{o: o, users: NewUsers[*SMTPProfile](), implicit: o.ImplicitTLS}
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
	if s.implicit {
		l = tls.NewListener(l, s.o.TLSConfig)
	}
	err := s.srv.Serve(l)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for sessions to end (messages in flight
// are finished) until ctx ends, then closes what is left.
func (s *SMTPServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// NewSession implements smtp.Backend.
func (s *SMTPServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ss := &smtpSession{s: s, ctx: ctx, cancel: cancel, remote: c.Conn().RemoteAddr().String()}
	if s.noAuth != nil {
		ss.bind(s.noAuth, "")
	}
	return ss, nil
}

type smtpSession struct {
	s       *SMTPServer
	ctx     context.Context
	cancel  context.CancelFunc
	remote  string
	profile *SMTPProfile
	login   string
	txn     Transaction
	from    string
	rcpts   int
	size    int64
	relayed int64 // bytes of the messages the upstream accepted
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
		p, label, err := ss.s.users.Check(username, password)
		if err != nil {
			ss.s.o.Logger.Warn("local login failed", "proto", "smtp", "remote", ss.remote, "user", username)
			return smtp.ErrAuthFailed
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

func (ss *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	if ss.profile == nil {
		return smtp.ErrAuthRequired
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
	if err := ss.txn.Rcpt(to, opts); err != nil {
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
	cr := &countingReader{r: r}
	err := ss.txn.Data(cr)
	ss.txn = nil
	log := ss.s.o.Logger.With("proto", "smtp", "profile", ss.profile.Name, "login", ss.login, "remote", ss.remote,
		"rcpts", ss.rcpts, "bytes", cr.n, "ms", time.Since(start).Milliseconds())
	if err != nil {
		log.Warn("message not relayed", "err", err)
		ss.s.o.Observer.Failed("smtp", ss.profile.Name, err)
		return smtpReply(err)
	}
	log.Info("message relayed")
	ss.s.o.Observer.Relayed(ss.profile.Name, cr.n, time.Since(start))
	ss.relayed += cr.n
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
	if ss.profile != nil {
		ss.s.o.Observer.SessionEnded("smtp", ss.profile.Name, ss.relayed, 0)
	}
	ss.Reset()
	ss.cancel()
	return nil
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
