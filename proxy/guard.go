package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what the clients of one local listener may take, so that a
// flood on one listener leaves the others (and the process's file
// descriptors) alone.
type Limits struct {
	// MaxConns is how many connections the listener holds at once (0: no
	// cap). A connection over it is told so and closed.
	MaxConns int
	// MaxPerAddress is how many of them one client address not on
	// loopback may hold (0: no cap). Loopback clients (apps on this host,
	// a sidecar's pod) share MaxConns only.
	MaxPerAddress int
	// LoginTimeout is the time from a connection's start to a completed
	// local login (0: none, for SMTP without AUTH). Commands before it do
	// not extend it.
	LoginTimeout time.Duration
	// Logins, when set, limits failed logins per client address across
	// connections and listeners.
	Logins *LoginGuard
}

// busyReply is the protocol's "too many connections" line, sent before a
// refused connection is closed.
type busyReply func(reason string) string

// maxRefusing bounds the goroutines telling refused clients why; beyond
// it, a refused connection is closed without a word.
const maxRefusing = 64

// guardedListener applies Limits to a listener's connections and logs
// accept errors (out of file descriptors, say) at WARN, then goes on.
type guardedListener struct {
	net.Listener
	proto    string
	limits   Limits
	busy     busyReply
	tls      *tls.Config // implicit TLS: the refusal is sent over TLS
	log      *slog.Logger
	refusing atomic.Int32

	mu      sync.Mutex
	conns   int
	perAddr map[netip.Addr]int
	live    map[*guardedConn]struct{}
}

func guard(l net.Listener, proto string, limits Limits, busy busyReply, implicitTLS *tls.Config, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: l, proto: proto, limits: limits, busy: busy, tls: implicitTLS, log: log,
		perAddr: map[netip.Addr]int{}, live: map[*guardedConn]struct{}{}}
}

// closeIdle closes every connection not marked busy.
func (l *guardedListener) closeIdle() {
	l.mu.Lock()
	var idle []*guardedConn
	for c := range l.live {
		if !c.busy.Load() {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// Accept returns the next connection within the limits. Connections over
// them are refused with the protocol's reply; temporary accept errors are
// logged and retried with backoff. It ends when the listener is closed.
func (l *guardedListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "proto", l.proto, "addr", l.Addr().String(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		addr := remoteAddr(c)
		if reason := l.admit(addr); reason != "" {
			l.refuse(c, reason)
			continue
		}
		g := &guardedConn{Conn: c, l: l, addr: addr}
		if d := l.limits.LoginTimeout; d > 0 {
			g.loginBy.Store(time.Now().Add(d).UnixNano())
		}
		l.mu.Lock()
		l.live[g] = struct{}{}
		l.mu.Unlock()
		return g, nil
	}
}

// admit counts a new connection from addr, or says why it is refused.
func (l *guardedListener) admit(addr netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.limits.MaxConns; m > 0 && l.conns >= m {
		return fmt.Sprintf("too many connections (%d) to this listener", m)
	}
	perAddr := l.limits.MaxPerAddress > 0 && !addr.IsLoopback()
	if perAddr && l.perAddr[addr] >= l.limits.MaxPerAddress {
		return fmt.Sprintf("too many connections (%d) from %s", l.limits.MaxPerAddress, addr)
	}
	l.conns++
	if perAddr {
		l.perAddr[addr]++
	}
	return ""
}

// release forgets a connection that is closed.
func (l *guardedListener) release(c *guardedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.live, c)
	l.conns--
	if n, ok := l.perAddr[c.addr]; ok {
		if n <= 1 {
			delete(l.perAddr, c.addr)
		} else {
			l.perAddr[c.addr] = n - 1
		}
	}
}

// refuse tells the client why and closes the connection; over TLS in the
// background (the handshake comes first), with a deadline.
func (l *guardedListener) refuse(c net.Conn, reason string) {
	l.log.Warn("connection refused", "proto", l.proto, "remote", c.RemoteAddr().String(), "reason", reason)
	if l.tls == nil {
		// A line to a new connection fits its socket buffer: no wait.
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		c.Write([]byte(l.busy(reason) + "\r\n"))
		c.Close()
		return
	}
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer l.refusing.Add(-1)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, l.tls)
		if tc.Handshake() == nil {
			tc.Write([]byte(l.busy(reason) + "\r\n"))
		}
	}()
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// guardedConn is an admitted connection. Until LoggedIn, no read may wait
// past the login deadline, however often the client sends a command (or
// the server sets a deadline): a client that never logs in is closed in
// bounded time. Writes keep their own deadlines, so the "logged out" line
// still reaches the client.
type guardedConn struct {
	net.Conn
	l       *guardedListener
	addr    netip.Addr
	loginBy atomic.Int64 // Unix ns; 0 once logged in
	closed  sync.Once
	// closeAfterWrite ends the connection once the next reply is out
	// (SMTP's third failed login, which go-smtp answers itself).
	closeAfterWrite atomic.Bool
	// busy marks a message in flight: a graceful shutdown lets it finish.
	busy atomic.Bool
}

// LoggedIn lifts the login deadline.
func (c *guardedConn) LoggedIn() {
	c.loginBy.Store(0)
	c.Conn.SetReadDeadline(time.Time{})
}

// LoginDeadline is when the client must have logged in (zero: no bound).
func (c *guardedConn) LoginDeadline() time.Time {
	if n := c.loginBy.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (c *guardedConn) clamp(t time.Time) time.Time {
	if by := c.LoginDeadline(); !by.IsZero() && (t.IsZero() || t.After(by)) {
		return by
	}
	return t
}

func (c *guardedConn) SetDeadline(t time.Time) error {
	c.Conn.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *guardedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if by := c.LoginDeadline(); !by.IsZero() && !time.Now().Before(by) {
		return 0, errLoginTimeout
	}
	return c.Conn.Read(p)
}

func (c *guardedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	return n, err
}

// CloseWrite passes a half-close on (the relay does, at a clean EOF).
func (c *guardedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.l.release(c) })
	return err
}

// errLoginTimeout is a read after the login deadline: a timeout, as
// servers (go-smtp too) expect of a deadline.
var errLoginTimeout = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string        { return "no login within the login timeout" }
func (*timeoutError) Timeout() bool        { return true }
func (*timeoutError) Temporary() bool      { return true }
func (*timeoutError) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// guardedOf finds the guarded connection under TLS layers.
func guardedOf(c net.Conn) *guardedConn {
	for c != nil {
		switch x := c.(type) {
		case *guardedConn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// LoginGuard limits failed local logins per client address, across
// connections, listeners and protocols: a token bucket of PerMinute
// failures, refilled at PerMinute a minute. While it is empty, logins from
// that address are refused as temporary failures without a password check,
// so guessing runs at most PerMinute a minute, however many connections
// try.
type LoginGuard struct {
	perMinute float64
	now       func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLoginGuard allows perMinute failed logins a minute per address.
func NewLoginGuard(perMinute int) *LoginGuard {
	return &LoginGuard{perMinute: float64(max(perMinute, 1)), now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// fill brings addr's bucket up to now. The caller holds g.mu.
func (g *LoginGuard) fill(addr netip.Addr) *bucket {
	now := g.now()
	b := g.buckets[addr]
	if b == nil {
		if len(g.buckets) > 10000 {
			g.prune(now)
		}
		b = &bucket{tokens: g.perMinute, at: now}
		g.buckets[addr] = b
	}
	b.tokens = min(g.perMinute, b.tokens+now.Sub(b.at).Minutes()*g.perMinute)
	b.at = now
	return b
}

// prune forgets full buckets.
func (g *LoginGuard) prune(now time.Time) {
	for a, b := range g.buckets {
		if b.tokens+now.Sub(b.at).Minutes()*g.perMinute >= g.perMinute {
			delete(g.buckets, a)
		}
	}
}

// Try reports whether addr may try a login now (taking one attempt from
// its budget), or how long until it may. A login that succeeds gives it
// back (Refund), so only failures count, and concurrent tries cannot
// overdraw the budget.
func (g *LoginGuard) Try(addr netip.Addr) (time.Duration, bool) {
	if g == nil {
		return 0, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.fill(addr)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait := time.Duration((1 - b.tokens) / g.perMinute * float64(time.Minute))
	return wait.Round(time.Second) + time.Second, false
}

// Refund gives back the attempt of a login that succeeded.
func (g *LoginGuard) Refund(addr netip.Addr) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.fill(addr)
	b.tokens = min(b.tokens+1, g.perMinute)
}
