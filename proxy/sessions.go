package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Timeouts of the IMAP and POP3 listeners before login. RFC 3501 §5.4 asks
// for at least 30 minutes only once logged in; before, a client is expected
// to log in promptly.
const (
	// DefaultLoginTimeout is the time from a connection's start to a
	// completed local login, unless Limits say otherwise.
	DefaultLoginTimeout = 2 * time.Minute
	// failureDelay answers a failed local login, so guessing is slow.
	failureDelay = 500 * time.Millisecond
	// maxLoginFailures per connection, then the session is closed.
	maxLoginFailures = 3
	// upstreamLoginTimeout bounds connecting and logging in upstream.
	upstreamLoginTimeout = time.Minute
	// byeTimeout bounds writing the last line to a client.
	byeTimeout = 5 * time.Second
)

// LoggedIn is an IMAP or POP3 session past its local login, on the
// profile's side: today an upstream login whose bytes are relayed; a
// mailbox mailproxy serves itself plugs in here too.
type LoggedIn interface {
	// Serve runs the session on the client's connection until it ends and
	// returns the bytes moved to the server and to the client. ctx ends
	// when a graceful shutdown has waited long enough.
	Serve(ctx context.Context, c Client) (up, down int64)
	// Close ends a session that will not be served (the client left).
	Close() error
}

// Client is the local side of a logged-in session.
type Client struct {
	Conn net.Conn
	// Pending are bytes the client sent after its login command.
	Pending []byte
	// IdleTimeout ends a session quiet both ways for this long.
	IdleTimeout time.Duration
	act         *activity
}

// Touch marks the session busy now (graceful shutdown lets busy sessions
// finish and closes quiet ones).
func (c Client) Touch() { c.act.touch() }

// relayed is a LoggedIn whose bytes go to an upstream connection.
type relayed struct{ up net.Conn }

func (r relayed) Serve(_ context.Context, c Client) (int64, int64) {
	return relay(c.Conn, r.up, c.Pending, c.IdleTimeout, c.act)
}

func (r relayed) Close() error { return r.up.Close() }

// sessions is what the IMAP and POP3 listeners share: accepting within
// limits, implicit TLS, tracking sessions, and shutting down gracefully.
type sessions struct {
	proto    string
	tls      *tls.Config
	implicit bool
	log      *slog.Logger
	serve    func(ctx context.Context, c net.Conn, gc *guardedConn, act *activity)
	busy     busyReply
	limits   Limits
	observer Observer
	// failureDelay answers a failed local login (tests set it to zero).
	failureDelay time.Duration
	idleTimeout  time.Duration

	mu        sync.Mutex
	listeners []net.Listener
	live      map[net.Conn]*activity
	closing   bool
	wg        sync.WaitGroup
	// ctx ends when shutdown starts: logins under way are abandoned; hard
	// ends when it has waited long enough for sessions to finish.
	ctx       context.Context
	cancel    context.CancelFunc
	hard      context.Context
	cancelAll context.CancelFunc
}

func (s *sessions) init() {
	if s.idleTimeout <= 0 {
		s.idleTimeout = DefaultIdleTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.limits.LoginTimeout <= 0 {
		s.limits.LoginTimeout = DefaultLoginTimeout
	}
	s.live = map[net.Conn]*activity{}
	s.observer = observerOr(s.observer)
	s.failureDelay = failureDelay
	s.hard, s.cancelAll = context.WithCancel(context.Background())
	s.ctx, s.cancel = context.WithCancel(s.hard)
}

// Serve accepts connections on l until Shutdown.
func (s *sessions) Serve(l net.Listener) error {
	var implicit *tls.Config
	if s.implicit {
		implicit = s.tls
	}
	g := guard(l, s.proto, s.limits, s.busy, implicit, s.log)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	for {
		c, err := g.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			return err
		}
		gc := c.(*guardedConn)
		var conn net.Conn = gc
		if s.implicit {
			conn = tls.Server(gc, s.tls)
		}
		act := &activity{}
		act.touch()
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			conn.Close()
			continue
		}
		s.live[conn] = act
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.live, conn)
				s.mu.Unlock()
			}()
			defer conn.Close()
			s.serveConn(conn, gc, act)
		}()
	}
}

// serveConn runs one session: the implicit TLS handshake first, within the
// login deadline.
func (s *sessions) serveConn(conn net.Conn, gc *guardedConn, act *activity) {
	if tc, ok := conn.(*tls.Conn); ok {
		tc.SetDeadline(time.Now().Add(s.limits.LoginTimeout))
		if err := tc.Handshake(); err != nil {
			s.log.Debug("local TLS handshake failed", "proto", s.proto, "remote", conn.RemoteAddr().String(), "err", err)
			return
		}
	}
	s.serve(s.ctx, conn, gc, act)
}

// Shutdown stops accepting and abandons logins under way at once; it lets
// sessions that are moving bytes finish until ctx ends, and closes quiet
// ones (idle IMAP clients reconnect to the next process) and then
// everything left.
func (s *sessions) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle(time.Second)
		select {
		case <-done:
			s.cancelAll()
			return nil
		case <-ctx.Done():
			s.cancelAll()
			s.closeIdle(0)
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// relayLoggedIn runs a session whose login the client has been told
// succeeded: the bytes r already holds are handed over first, then the
// session is served until it ends. The caller drops its own reference to
// r first, so an idle session keeps no pre-login buffer.
func (s *sessions) relayLoggedIn(conn net.Conn, r *bufio.Reader, li LoggedIn, act *activity, log *slog.Logger, profile string, start time.Time) {
	pending, _ := r.Peek(r.Buffered())
	pending = bytes.Clone(pending)
	conn.SetDeadline(time.Time{})
	act.relaying.Store(true)
	log.Info("logged in upstream", "upstream_ms", time.Since(start).Milliseconds())
	s.observer.LoggedIn(s.proto, profile, time.Since(start))
	s.observer.SessionStarted(s.proto, profile)
	toUp, toLocal := li.Serve(s.hard, Client{Conn: conn, Pending: pending, IdleTimeout: s.idleTimeout, act: act})
	log.Info("session ended", "outcome", "ok", "bytes_up", toUp, "bytes_down", toLocal, "duration", time.Since(start).Round(time.Millisecond))
	s.observer.SessionEnded(s.proto, profile, toUp, toLocal)
}

// closeIdle closes sessions quiet for at least d, and every session not
// yet logged in.
func (s *sessions) closeIdle(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, act := range s.live {
		if d == 0 || !act.relaying.Load() || act.idleFor() >= d {
			c.Close()
		}
	}
}

// noTLSHint answers a STARTTLS (STLS) the listener cannot do, saying what
// to set: clients such as fetchmail 6.4 and mbsync ask for TLS by default
// and stop here.
func noTLSHint(cmd string, isTLS bool) string {
	if isTLS {
		return cmd + " is not available: TLS is already on"
	}
	return cmd + " is not available: this listener has no certificate (give it tls:, or tell the client to log in without TLS on loopback: fetchmail sslproto '', mbsync SSLType None)"
}
