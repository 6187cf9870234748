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
	// MaxIdle sessions kept open between messages (default 4), or two for
	// each that carried a message at once lately, each for at most
	// IdleTimeout (default 60 s).
	MaxIdle     int
	IdleTimeout time.Duration
	// Timeout bounds each command's reply and each write (default 2 min):
	// a server that stops reading, after 354 say, fails the message in
	// bounded time. The reply to the message's final dot may take
	// FinalReplyTimeout (default 10 min, RFC 5321 §4.5.3.2.6).
	Timeout           time.Duration
	FinalReplyTimeout time.Duration
	Dialer            *net.Dialer
	Logger            *slog.Logger
}

// SMTP delivers messages to one upstream server, reusing each
// authenticated session for up to MessagesPerSession messages. When a
// session takes its last messages, its successor is opened and logged in
// to, so that the next message does not wait for a handshake.
type SMTP struct {
	o        SMTPOptions
	mu       sync.Mutex
	idle     []*smtpConn
	busy     int // sessions carrying a transaction
	peak     int // most busy at once since the last reap
	closed   bool
	reaping  bool // reap is scheduled
	sessions atomic.Int64
	// quits are the QUITs of sessions being closed, waited for by Close.
	quits sync.WaitGroup
	// warming are the successors being opened; stop ends them at Close.
	warming sync.WaitGroup
	ctx     context.Context
	stop    context.CancelFunc
}

type smtpConn struct {
	c        *smtp.Client
	raw      net.Conn // under TLS, for closing from another goroutine
	w        net.Conn // what go-smtp writes to: a message is written to it directly
	sent     int
	dirty    bool // a transaction may be open: RSET before the next (a message ends its own, RFC 5321 §4.1.1.4)
	followed bool // its successor is being or has been opened
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
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.FinalReplyTimeout <= 0 {
		o.FinalReplyTimeout = 10 * time.Minute
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
	ctx, stop := context.WithCancel(context.Background())
	return &SMTP{o: o, ctx: ctx, stop: stop}
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
		err = sc.do(ctx, func() error { return sc.c.Mail(from, opts) })
		if err == nil {
			return &SMTPTransaction{up: s, sc: sc}, nil
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code != 421 {
			s.put(sc, false)
			return nil, err
		}
		s.drop(sc)
		// A pooled session the server has since closed: one retry on a new one.
		if !reused || attempt > 0 {
			return nil, &Error{Profile: s.o.Profile, Stage: StageSession, Err: err}
		}
	}
}

// Check opens a session and logs in, then closes it: for mailproxy check.
func (s *SMTP) Check(ctx context.Context) error {
	sc, err := s.dial(ctx)
	if err != nil {
		return err
	}
	s.quit(sc)
	return nil
}

// Close ends idle sessions and those being opened, and waits for the QUITs
// under way; sessions in use end when released, without being waited for.
func (s *SMTP) Close() {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	s.stop()
	s.warming.Wait()
	var quits sync.WaitGroup
	for _, sc := range idle {
		quits.Go(func() { sayQuit(sc) })
	}
	quits.Wait()
	s.quits.Wait()
}

// quitTimeout bounds the QUIT of a session being closed.
const quitTimeout = 10 * time.Second

// quit says QUIT on a session that is done, in the background. Close
// waits for the QUITs begun before it; one begun after (a session released
// once the upstream is closed) is not counted, since adding to a WaitGroup
// that Close may be waiting on is a race.
func (s *SMTP) quit(sc *smtpConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		go sayQuit(sc)
		return
	}
	s.quits.Go(func() { sayQuit(sc) })
}

func sayQuit(sc *smtpConn) {
	sc.c.CommandTimeout = quitTimeout
	sc.c.Quit()
	sc.c.Close()
}

// followAhead is how many messages before its last a session's successor
// is opened: opening one (greeting, EHLO, STARTTLS, TLS, EHLO, AUTH) takes
// 5 round trips or more, a message (MAIL, RCPT, DATA, the dot) 4, so the
// successor is ready when the last message is done.
const followAhead = 2

// get returns an idle session (after RSET) or a new one, counted as busy
// until put or dropped.
func (s *SMTP) get(ctx context.Context) (*smtpConn, bool, error) {
	sc, reused, err := s.take(ctx)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	s.busy++
	s.peak = max(s.peak, s.busy)
	if sc.sent+followAhead >= s.o.MessagesPerSession && !sc.followed && !s.closed {
		sc.followed = true
		s.warming.Go(s.warm)
	}
	s.mu.Unlock()
	return sc, reused, nil
}

func (s *SMTP) take(ctx context.Context) (*smtpConn, bool, error) {
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
		// A session logged in before the account was signed out (its
		// grant revoked, or token remove) carries no more messages. A
		// temporary token failure does not stop it: it is logged in.
		if _, err := s.o.Auth.token(ctx, s.o.Profile); KindOf(err) == PersonNeeded {
			s.quit(sc)
			s.endIdle()
			return nil, false, err
		}
		if time.Since(sc.lastUsed) > s.o.IdleTimeout {
			s.quit(sc)
			continue
		}
		if sc.dirty {
			if err := sc.do(ctx, sc.c.Reset); err != nil {
				sc.c.Close()
				continue
			}
			sc.dirty = false
		}
		return sc, true, nil
	}
	sc, err := s.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return sc, false, nil
}

// endIdle says QUIT to every idle session.
func (s *SMTP) endIdle() {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, sc := range idle {
		s.quit(sc)
	}
}

// put returns a session to the pool after a message (sent) or an aborted
// transaction; a session that carried MessagesPerSession messages is closed.
func (s *SMTP) put(sc *smtpConn, sent bool) {
	if sent {
		sc.sent++
	}
	sc.dirty = !sent
	sc.lastUsed = time.Now()
	s.mu.Lock()
	s.busy--
	if !s.closed && sc.sent < s.o.MessagesPerSession && len(s.idle) < s.idleCap() {
		s.pool(sc)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.quit(sc)
}

// drop closes a busy session that is broken.
func (s *SMTP) drop(sc *smtpConn) {
	s.mu.Lock()
	s.busy--
	s.mu.Unlock()
	sc.c.Close()
}

// idleCap is how many idle sessions are kept: MaxIdle, or two for each
// session in use at once lately: its sender is likely to want it again,
// and it may have a successor waiting. The caller holds s.mu.
func (s *SMTP) idleCap() int { return max(s.o.MaxIdle, 2*s.peak) }

// warm opens the successor of a session near its last message and pools
// it. If it cannot be opened, the next message opens one itself and
// reports why.
func (s *SMTP) warm() {
	sc, err := s.dial(s.ctx)
	if err != nil {
		s.o.Logger.Debug("upstream session not opened ahead", "profile", s.o.Profile, "upstream", s.o.Addr, "err", err)
		return
	}
	sc.lastUsed = time.Now()
	s.mu.Lock()
	if !s.closed && len(s.idle) < s.idleCap() {
		// Behind the sessions with messages left, which go first: they
		// are used up in turn, rather than each kept on for a last one.
		s.pool(sc)
		copy(s.idle[1:], s.idle)
		s.idle[0] = sc
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.quit(sc)
}

// pool keeps sc for the next message, and says QUIT to it once it has
// been idle for IdleTimeout. The caller holds s.mu.
func (s *SMTP) pool(sc *smtpConn) {
	s.idle = append(s.idle, sc)
	if !s.reaping {
		s.reaping = true
		time.AfterFunc(s.o.IdleTimeout, s.reap)
	}
}

// reap ends the sessions idle for IdleTimeout or more, and comes back for
// the others when the first of them will be.
func (s *SMTP) reap() {
	s.mu.Lock()
	var stale []*smtpConn
	kept := s.idle[:0]
	next := s.o.IdleTimeout
	for _, sc := range s.idle {
		if idle := time.Since(sc.lastUsed); idle >= s.o.IdleTimeout {
			stale = append(stale, sc)
		} else {
			kept = append(kept, sc)
			next = min(next, s.o.IdleTimeout-idle)
		}
	}
	clear(s.idle[len(kept):])
	s.idle = kept
	s.peak = s.busy
	s.reaping = len(kept) > 0
	if s.reaping {
		time.AfterFunc(next, s.reap)
	}
	s.mu.Unlock()
	for _, sc := range stale {
		s.quit(sc)
	}
}

// dial connects, secures and authenticates a new session.
func (s *SMTP) dial(ctx context.Context) (*smtpConn, error) {
	var sc *smtpConn
	err := s.o.Auth.login(ctx, s.o.Profile, IsRefused, func(tok *oauth2.Token) error {
		var err error
		if sc, err = s.connect(ctx); err != nil {
			return err
		}
		if err = sc.do(ctx, func() error { return s.auth(sc.c, tok) }); err != nil {
			sc.c.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.sessions.Add(1)
	s.o.Logger.Debug("upstream session opened", "profile", s.o.Profile, "upstream", s.o.Addr)
	return sc, nil
}

func (s *SMTP) connect(ctx context.Context) (*smtpConn, error) {
	raw, err := s.o.Dialer.DialContext(ctx, "tcp", s.o.Addr)
	if err != nil {
		return nil, &Error{Profile: s.o.Profile, Stage: StageConnect, Err: err}
	}
	var conn net.Conn = writeTimeoutConn{Conn: raw, d: s.o.Timeout}
	if s.o.TLS == "implicit" {
		tc := tls.Client(conn, s.o.TLSConfig)
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, &Error{Profile: s.o.Profile, Stage: StageTLS, Err: err}
		}
		conn = tc
	}
	// Every step below is bounded: the greeting, EHLO and STARTTLS included.
	conn.SetDeadline(time.Now().Add(s.o.Timeout))
	defer conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	if s.o.TLS == "starttls" {
		if conn, err = startTLS(ctx, conn, s.o.TLSConfig); err != nil {
			raw.Close()
			return nil, &Error{Profile: s.o.Profile, Stage: StageTLS, Err: fmt.Errorf("STARTTLS: %w", err)}
		}
	}
	c := smtp.NewClient(conn)
	if err := c.Hello("localhost"); err != nil {
		c.Close()
		return nil, &Error{Profile: s.o.Profile, Stage: StageConnect, Err: err}
	}
	c.CommandTimeout = s.o.Timeout
	c.SubmissionTimeout = s.o.FinalReplyTimeout
	return &smtpConn{c: c, raw: raw, w: conn}, nil
}

// do runs one exchange with the server; if ctx ends meanwhile the
// connection is closed, which ends the exchange (the session is broken then).
func (sc *smtpConn) do(ctx context.Context, f func() error) error {
	stop := context.AfterFunc(ctx, func() { sc.raw.Close() })
	defer stop()
	return f()
}

// writeTimeoutConn bounds every write to the server: go-smtp sets no
// deadline while a message streams, so a server that stops reading would
// hold the session forever. Reads keep go-smtp's own deadlines.
type writeTimeoutConn struct {
	net.Conn
	d time.Duration
}

func (c writeTimeoutConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.d))
	return c.Conn.Write(p)
}

// auth logs in. A 5xx reply refuses mailproxy's token or password (535,
// or a mechanism the server will not take); a 4xx or a broken connection
// is temporary.
func (s *SMTP) auth(c *smtp.Client, tok *oauth2.Token) error {
	host, port := splitPort(s.o.Addr)
	sc := s.o.Auth.client(tok, host, port, false)
	err := c.Auth(sc)
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code/100 == 5 {
		return refused(s.o.Profile, &RefusedError{Reply: smtpReplyText(se), Challenge: serverChallenge(sc)})
	}
	if ch := serverChallenge(sc); ch != "" {
		err = fmt.Errorf("%w (server said %s)", err, ch)
	}
	return &Error{Profile: s.o.Profile, Stage: StageAuth, Err: err}
}

// SMTPTransaction is one message being relayed.
type SMTPTransaction struct {
	up   *SMTP
	sc   *smtpConn
	done bool
}

// Rcpt adds a recipient; an upstream refusal is returned as *smtp.SMTPError.
func (t *SMTPTransaction) Rcpt(ctx context.Context, to string, opts *smtp.RcptOptions) error {
	err := t.sc.do(ctx, func() error { return t.sc.c.Rcpt(to, opts) })
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: StageSession, Err: err}
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
// large) or ctx ends, the upstream connection is dropped without the final
// dot, so a partial message is never delivered; a read error is returned
// as is. The message is dot-stuffed here and written to the connection
// itself; go-smtp's writer only ends it and reads the reply.
func (t *SMTPTransaction) Data(ctx context.Context, r io.Reader) error {
	stop := context.AfterFunc(ctx, func() { t.sc.raw.Close() })
	defer stop()
	w, err := t.sc.c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.release(false)
			return err
		}
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: StageSession, Err: err}
	}
	dw := newDotWriter(t.sc.w)
	defer dw.release()
	_, err = io.Copy(dw, trackedReader{r})
	if err == nil {
		err = dw.Close()
	}
	if err != nil {
		t.fail()
		var le *localReadError
		if errors.As(err, &le) {
			return le.err
		}
		return &Error{Profile: t.up.o.Profile, Stage: StageSession, Err: fmt.Errorf("sending message: %w", err)}
	}
	if err := w.Close(); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.release(false)
			return err
		}
		t.fail()
		return &Error{Profile: t.up.o.Profile, Stage: StageSession, Err: fmt.Errorf("after message: %w", err)}
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
	t.up.drop(t.sc)
}

// smtpReplyText is a server reply as it was on the wire: "535 5.7.8 text".
func smtpReplyText(se *smtp.SMTPError) string {
	if ec := se.EnhancedCode; ec[0] > 0 {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], se.Message)
	}
	return fmt.Sprintf("%d %s", se.Code, se.Message)
}
