package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"
)

// SMTPOptions configure an SMTP upstream.
type SMTPOptions struct {
	Profile string
	// Addr is host:port.
	Addr string
	// TLS is "implicit", "starttls" or "none".
	TLS       string
	TLSConfig *tls.Config
	Auth      Auth
	// MessagesPerSession is how many messages one session carries before it
	// is closed (default 3).
	MessagesPerSession int
	// MaxIdle sessions kept open between messages (default 4), each for at
	// most IdleTimeout (default 60 s).
	MaxIdle     int
	IdleTimeout time.Duration
	Dialer      *net.Dialer
	Logger      *slog.Logger
}

// SMTP delivers messages to one upstream server, reusing each
// authenticated session for up to MessagesPerSession messages.
type SMTP struct {
	o        SMTPOptions
	mu       sync.Mutex
	idle     []*smtpConn
	closed   bool
	sessions atomic.Int64
}

type smtpConn struct {
	c        *smtp.Client
	sent     int
	lastUsed time.Time
}

// NewSMTP returns an SMTP upstream; it connects on first use.
func NewSMTP(o SMTPOptions) *SMTP {
	if o.MessagesPerSession <= 0 {
		o.MessagesPerSession = 3
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = 4
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{}
	}
	if o.TLSConfig.ServerName == "" {
		o.TLSConfig = o.TLSConfig.Clone()
		o.TLSConfig.ServerName, _ = splitPort(o.Addr)
	}
	return &SMTP{o: o}
}

// Sessions is the number of upstream sessions opened so far.
func (s *SMTP) Sessions() int64 { return s.sessions.Load() }

// Begin starts a mail transaction (MAIL FROM) on a pooled or new session.
// Errors are *smtp.SMTPError when the upstream answered MAIL, and *Error when
// it could not be reached or logged in to.
func (s *SMTP) Begin(ctx context.Context, from string, opts *smtp.MailOptions) (*SMTPTransaction, error) {
	for attempt := 0; ; attempt++ {
		sc, reused, err := s.get(ctx)
		if err != nil {
			return nil, err
		}
		err = sc.c.Mail(from, opts)
		if err == nil {
			return &SMTPTransaction{up: s, sc: sc}, nil
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code != 421 {
			s.put(sc, false)
			return nil, err
		}
		sc.c.Close()
		// A pooled session the server has since closed: one retry on a new one.
		if !reused || attempt > 0 {
			return nil, &Error{Profile: s.o.Profile, Stage: "session", Err: err}
		}
	}
}

// Check opens a session and logs in, then closes it: for mailproxy check.
func (s *SMTP) Check(ctx context.Context) error {
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	c.Quit()
	return nil
}

// Close ends idle sessions; sessions in use end when released.
func (s *SMTP) Close() {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, sc := range idle {
		sc.c.Quit()
	}
}

// get returns an idle session (after RSET) or a new one.
func (s *SMTP) get(ctx context.Context) (*smtpConn, bool, error) {
	for {
		s.mu.Lock()
		var sc *smtpConn
		if n := len(s.idle); n > 0 {
			sc, s.idle = s.idle[n-1], s.idle[:n-1]
		}
		s.mu.Unlock()
		if sc == nil {
			break
		}
		if time.Since(sc.lastUsed) > s.o.IdleTimeout {
			go sc.c.Quit()
			continue
		}
		if err := sc.c.Reset(); err != nil {
			sc.c.Close()
			continue
		}
		return sc, true, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &smtpConn{c: c}, false, nil
}

// put returns a session to the pool after a message (sent) or an aborted
// transaction; a session that carried MessagesPerSession messages is closed.
func (s *SMTP) put(sc *smtpConn, sent bool) {
	if sent {
		sc.sent++
	}
	sc.lastUsed = time.Now()
	s.mu.Lock()
	if !s.closed && sc.sent < s.o.MessagesPerSession && len(s.idle) < s.o.MaxIdle {
		s.idle = append(s.idle, sc)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	go sc.c.Quit()
}

// dial connects, secures and authenticates a new session.
func (s *SMTP) dial(ctx context.Context) (*smtp.Client, error) {
	var c *smtp.Client
	refused := func(err error) bool {
		var se *smtp.SMTPError
		return errors.As(err, &se) && se.Code == 535
	}
	err := s.o.Auth.login(ctx, s.o.Profile, refused, func(tok *oauth2.Token) error {
		var err error
		if c, err = s.connect(ctx); err != nil {
			return err
		}
		if err = s.auth(c, tok); err != nil {
			c.Close()
			return &Error{Profile: s.o.Profile, Stage: "auth", Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.sessions.Add(1)
	s.o.Logger.Debug("upstream session opened", "profile", s.o.Profile, "upstream", s.o.Addr)
	return c, nil
}

func (s *SMTP) connect(ctx context.Context) (*smtp.Client, error) {
	conn, err := s.o.Dialer.DialContext(ctx, "tcp", s.o.Addr)
	if err != nil {
		return nil, &Error{Profile: s.o.Profile, Stage: "connect", Err: err}
	}
	if s.o.TLS == "implicit" {
		tc := tls.Client(conn, s.o.TLSConfig)
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			conn.Close()
			return nil, &Error{Profile: s.o.Profile, Stage: "tls", Err: err}
		}
		conn = tc
	}
	// Every step below is bounded: the greeting, EHLO and STARTTLS included.
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	defer conn.SetDeadline(time.Time{})
	if s.o.TLS == "starttls" {
		c, err := smtp.NewClientStartTLS(conn, s.o.TLSConfig)
		if err != nil {
			return nil, &Error{Profile: s.o.Profile, Stage: "tls", Err: fmt.Errorf("STARTTLS: %w", err)}
		}
		c.CommandTimeout = 2 * time.Minute
		return c, nil
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 2 * time.Minute
	if err := c.Hello("localhost"); err != nil {
		c.Close()
		return nil, &Error{Profile: s.o.Profile, Stage: "connect", Err: err}
	}
	return c, nil
}

func (s *SMTP) auth(c *smtp.Client, tok *oauth2.Token) error {
	host, port := splitPort(s.o.Addr)
	sc := s.o.Auth.client(tok, host, port, false)
	err := c.Auth(sc)
	if ch := serverChallenge(sc); err != nil && ch != "" {
		return fmt.Errorf("%w (server said %s)", err, ch)
	}
	return err
}

// SMTPTransaction is one message being relayed.
type SMTPTransaction struct {
	up   *SMTP
	sc   *smtpConn
	done bool
}

// Rcpt adds a recipient; an upstream refusal is returned as *smtp.SMTPError.
func (t *SMTPTransaction) Rcpt(to string, opts *smtp.RcptOptions) error {
	err := t.sc.c.Rcpt(to, opts)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: "session", Err: err}
	}
	return err
}

// errLocalRead marks a failure to read the message from the local client.
type localReadError struct{ err error }

func (e *localReadError) Error() string { return e.err.Error() }
func (e *localReadError) Unwrap() error { return e.err }

type trackedReader struct{ r io.Reader }

func (t trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = &localReadError{err}
	}
	return n, err
}

// Data streams the message upstream and returns nil only when the upstream
// accepted it (250). If reading r fails (local client gone, message too
// large) the upstream connection is dropped without the final dot, so a
// partial message is never delivered; that error is returned as is.
func (t *SMTPTransaction) Data(r io.Reader) error {
	w, err := t.sc.c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.release(false)
			return err
		}
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: "session", Err: err}
	}
	if _, err := io.Copy(w, trackedReader{r}); err != nil {
		t.fail()
		var le *localReadError
		if errors.As(err, &le) {
			return le.err
		}
		return &Error{Profile: t.up.o.Profile, Stage: "session", Err: fmt.Errorf("sending message: %w", err)}
	}
	if err := w.Close(); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.release(false)
			return err
		}
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: "session", Err: fmt.Errorf("after message: %w", err)}
	}
	t.release(true)
	return nil
}

// Abort ends the transaction without a message; the session goes back to
// the pool (it is RSET before reuse).
func (t *SMTPTransaction) Abort() { t.release(false) }

func (t *SMTPTransaction) release(sent bool) {
	if t.done {
		return
	}
	t.done = true
	t.up.put(t.sc, sent)
}

// fail drops a broken session.
func (t *SMTPTransaction) fail() {
	if t.done {
		return
	}
	t.done = true
	t.sc.c.Close()
}
