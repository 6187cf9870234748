package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Timeouts of the IMAP and POP3 listeners before login. RFC 3501 §5.4 asks
// for at least 30 minutes only once logged in; before, a client is expected
// to log in promptly.
const (
	preauthTimeout = 2 * time.Minute
	// failureDelay answers a failed local login, so guessing is slow.
	failureDelay = 500 * time.Millisecond
	// maxLoginFailures per connection, then the session is closed.
	maxLoginFailures = 3
	// upstreamLoginTimeout bounds connecting and logging in upstream.
	upstreamLoginTimeout = time.Minute
)

// sessions is what the IMAP and POP3 listeners share: accepting, implicit
// TLS, tracking sessions, and shutting down gracefully.
type sessions struct {
	proto    string
	tls      *tls.Config
	implicit bool
	log      *slog.Logger
	serve    func(ctx context.Context, c net.Conn, act *activity)
	observer Observer
	// failureDelay answers a failed local login (tests set it to zero).
	failureDelay time.Duration
	idleTimeout  time.Duration

	mu        sync.Mutex
	listeners []net.Listener
	live      map[net.Conn]*activity
	closing   bool
	wg        sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc
}

func (s *sessions) init() {
	if s.idleTimeout <= 0 {
		s.idleTimeout = DefaultIdleTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.live = map[net.Conn]*activity{}
	s.observer = observerOr(s.observer)
	s.failureDelay = failureDelay
	s.ctx, s.cancel = context.WithCancel(context.Background())
}

// Serve accepts connections on l until Shutdown.
func (s *sessions) Serve(l net.Listener) error {
	if s.implicit {
		l = tls.NewListener(l, s.tls)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors, say: wait and go on.
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed", "proto", s.proto, "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		act := &activity{}
		act.touch()
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.live[c] = act
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.live, c)
				s.mu.Unlock()
			}()
			defer c.Close()
			s.serve(s.ctx, c, act)
		}()
	}
}

// Shutdown stops accepting, lets sessions that are moving bytes finish
// until ctx ends, and closes quiet ones (idle IMAP clients reconnect to
// the next process) and then everything left.
func (s *sessions) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle(time.Second)
		select {
		case <-done:
			s.cancel()
			return nil
		case <-ctx.Done():
			s.closeIdle(0)
			s.cancel()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// relayLoggedIn runs a session whose login the client has been told
// succeeded: the bytes r already holds go upstream first, then every byte
// is relayed until the session ends. The caller drops its own reference to
// r first, so an idle session keeps no pre-login buffer.
func (s *sessions) relayLoggedIn(conn net.Conn, r *bufio.Reader, up net.Conn, act *activity, log *slog.Logger, profile string, start time.Time) {
	pending, _ := r.Peek(r.Buffered())
	pending = bytes.Clone(pending)
	conn.SetDeadline(time.Time{})
	log.Info("logged in upstream", "upstream_ms", time.Since(start).Milliseconds())
	s.observer.LoggedIn(s.proto, profile, time.Since(start))
	s.observer.SessionStarted(s.proto, profile)
	toUp, toLocal := relay(conn, up, pending, s.idleTimeout, act)
	log.Info("session ended", "bytes_up", toUp, "bytes_down", toLocal, "duration", time.Since(start).Round(time.Millisecond))
	s.observer.SessionEnded(s.proto, profile, toUp, toLocal)
}

// closeIdle closes sessions quiet for at least d.
func (s *sessions) closeIdle(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, act := range s.live {
		if d == 0 || act.idleFor() >= d {
			c.Close()
		}
	}
}
