// Package graphimap is an IMAP server over a Microsoft Graph mailbox: after
// the IMAP listener's own login, go-imap v1's server runs the session on
// the client's connection, over a backend that translates IMAP into Graph
// calls and keeps UIDs, flags and bodies in a mirror (package mirror).
//
// go-imap v1 is used only here, so that a later move to v2 stays local.
package graphimap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"

	"mailproxy/proxy"
	"mailproxy/upstream"
	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// Defaults of a Backend.
const (
	// DefaultPoll is how often IDLE asks Graph for changes (delta) to the
	// selected folder. Push needs a public webhook, which a sidecar has
	// not; a folder's round is shared by every session that has it
	// selected, so ten idle clients on INBOX cost one request a poll.
	DefaultPoll = 15 * time.Second
	// fresh is how old a folder's last round may be for NOOP and CHECK to
	// use it as it is (SELECT always asks Graph what changed: a sync tool
	// selects each folder once).
	fresh = time.Second
	// treeFresh is how long a walk of the folder tree serves to resolve
	// names; LIST always walks it again.
	treeFresh = 30 * time.Second
	// DefaultAppendLimit is Exchange Online's default message size limit.
	DefaultAppendLimit = 35 << 20
)

// Backend serves a profile's IMAP sessions from its Graph mailbox. It is
// the IMAP listener's proxy.IMAPBackend.
type Backend struct {
	Profile string
	Client  *graph.Client
	Mirror  *mirror.Mailbox
	// Poll is IDLE's interval (DefaultPoll when 0).
	Poll time.Duration
	// AppendLimit is the largest APPEND taken (DefaultAppendLimit when 0).
	AppendLimit int64
	Log         *slog.Logger

	once     sync.Once
	srv      *server.Server
	ln       *chanListener
	sessions sync.Map // login key → *session
}

// capabilities are what a Graph IMAP session offers, after login.
func (b *Backend) capabilities() []string {
	return []string{"IMAP4rev1", "LITERAL+", "ID", "IDLE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE",
		fmt.Sprintf("APPENDLIMIT=%d", b.appendLimit())}
}

func (b *Backend) appendLimit() int64 {
	if b.AppendLimit > 0 {
		return b.AppendLimit
	}
	return DefaultAppendLimit
}

func (b *Backend) poll() time.Duration {
	if b.Poll > 0 {
		return b.Poll
	}
	return DefaultPoll
}

// Login implements proxy.IMAPBackend: the mirror can be opened and Graph
// answers for the mailbox (its folder tree, which the session needs
// first).
func (b *Backend) Login(ctx context.Context) ([]string, proxy.LoggedIn, error) {
	if err := b.Mirror.Open(); err != nil {
		return nil, nil, &upstream.Error{Profile: b.Profile, Stage: upstream.StageSession, Err: fmt.Errorf("graph state: %w", err)}
	}
	if _, err := b.Mirror.Tree(ctx, b.Client, treeFresh); err != nil {
		return nil, nil, b.Client.Classify(err)
	}
	return b.capabilities(), &session{b: b}, nil
}

// Close stops serving; sessions under way end.
func (b *Backend) Close() error {
	if b.srv != nil {
		b.srv.Close()
	}
	return nil
}

// start runs go-imap's server on an in-process listener, which Serve
// hands each logged-in connection.
func (b *Backend) start() {
	b.once.Do(func() {
		if b.Log == nil {
			b.Log = slog.New(slog.DiscardHandler)
		}
		b.ln = &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
		b.srv = server.New(inner{b})
		// The internal login is over the in-process pipe, after the
		// listener's own login with its TLS settings.
		b.srv.AllowInsecureAuth = true
		b.srv.ErrorLog = imapLogger{b.Log.With("proto", "imap", "profile", b.Profile)}
		b.srv.MaxLiteralSize = uint32(b.appendLimit())
		x := newExtension(b)
		b.srv.Enable(x)
		x.enabled.Store(true)
		go b.srv.Serve(b.ln)
	})
}

// session is one logged-in client.
type session struct {
	b   *Backend
	ctx context.Context
	log *slog.Logger
}

// Close implements proxy.LoggedIn.
func (s *session) Close() error { return nil }

// Serve implements proxy.LoggedIn: go-imap's server takes over the
// client's connection. It is logged in with a key of this session's own,
// over the connection before the client's bytes; what the server answers
// to that (its greeting and the login's OK) is not passed on, since the
// client has had both from the listener already.
func (s *session) Serve(ctx context.Context, c proxy.Client) (up, down int64) {
	s.b.start()
	key := make([]byte, 16)
	rand.Read(key)
	k := hex.EncodeToString(key)
	s.ctx, s.log = ctx, s.b.Log.With("proto", "imap", "profile", s.b.Profile)
	s.b.sessions.Store(k, s)
	defer s.b.sessions.Delete(k)
	w := &wireConn{Conn: c.Conn, skip: 2, idle: c.IdleTimeout, touch: c.Touch, closed: make(chan struct{})}
	client := &countingReader{r: io.MultiReader(bytes.NewReader(c.Pending), c.Conn), n: &w.up}
	w.in = &framer{r: bufio.NewReader(io.MultiReader(strings.NewReader("mailproxy LOGIN "+k+" session\r\n"), client)), bad: w.writeLine, maxLiteral: s.b.appendLimit()}
	select {
	case s.b.ln.ch <- w:
	case <-s.b.ln.done:
		c.Conn.Close()
		return 0, 0
	}
	select {
	case <-w.closed:
	case <-ctx.Done():
		w.Close()
		<-w.closed
	}
	return w.up.Load(), w.down.Load()
}

// inner is go-imap's backend.Backend: its Login takes the session's key.
type inner struct{ b *Backend }

func (i inner) Login(_ *imap.ConnInfo, key, _ string) (backend.User, error) {
	v, ok := i.b.sessions.LoadAndDelete(key)
	if !ok {
		return nil, backend.ErrInvalidCredentials
	}
	return &user{s: v.(*session)}, nil
}

// wireConn is the client's connection as go-imap's server sees it: the
// internal login first, then what the client sends; the first skip lines
// the server writes are dropped.
type wireConn struct {
	net.Conn
	in       io.Reader
	mu       sync.Mutex // one writer at a time: go-imap's, or the framer's BAD
	skip     int
	idle     time.Duration
	touch    func()
	up, down atomic.Int64
	once     sync.Once
	closed   chan struct{}
}

func (w *wireConn) Read(p []byte) (int, error) {
	if w.idle > 0 {
		w.Conn.SetReadDeadline(time.Now().Add(w.idle))
	}
	n, err := w.in.Read(p)
	w.touch()
	return n, err
}

func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for w.skip > 0 && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return n, nil
		}
		p, w.skip = p[i+1:], w.skip-1
	}
	if len(p) == 0 {
		return n, nil
	}
	if w.idle > 0 {
		w.Conn.SetWriteDeadline(time.Now().Add(w.idle))
	}
	m, err := w.Conn.Write(p)
	w.down.Add(int64(m))
	w.touch()
	if err != nil {
		return 0, err
	}
	return n, nil
}

// writeLine writes a response line of mailproxy's own.
func (w *wireConn) writeLine(line string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
	m, err := io.WriteString(w.Conn, oneLine(line)+"\r\n")
	w.down.Add(int64(m))
	return err
}

// SetDeadline is the server's own, which is off (AutoLogout 0): wireConn
// keeps the idle timeout.
func (w *wireConn) SetDeadline(time.Time) error { return nil }

func (w *wireConn) Close() error {
	err := w.Conn.Close()
	w.once.Do(func() { close(w.closed) })
	return err
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// chanListener hands go-imap's server the connections Serve gives it.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// imapLogger takes go-imap's log lines: connection ends and client
// mistakes, which are debug matters.
type imapLogger struct{ log *slog.Logger }

func (l imapLogger) Printf(format string, v ...any) {
	l.log.Debug("imap server", "msg", strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l imapLogger) Println(v ...any) {
	l.log.Debug("imap server", "msg", strings.TrimSpace(fmt.Sprintln(v...)))
}

// status answers with a status response of its own, with a code.
func status(typ imap.StatusRespType, code imap.StatusRespCode, args []any, format string, a ...any) error {
	return &imap.ErrStatusResp{Resp: &imap.StatusResp{Type: typ, Code: code, Arguments: args, Info: oneLine(fmt.Sprintf(format, a...))}}
}

func no(code imap.StatusRespCode, format string, a ...any) error {
	return status(imap.StatusRespNo, code, nil, format, a...)
}

// fail turns a failure into what the client is told: NO [UNAVAILABLE]
// when trying again later may work (Graph throttling or down, no token),
// NO [NOPERM] when Graph refuses mailproxy's credential, with what to
// grant, and NO with Graph's code and message for what only this request
// cannot do. op names the IMAP operation.
func (s *session) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*imap.ErrStatusResp](err); ok {
		return err
	}
	err = s.b.Client.Classify(err)
	log := s.log.With("op", op, "err", err)
	switch kind := upstream.KindOf(err); {
	case errors.Is(err, mirror.ErrInUse):
		log.Warn("graph state in use")
		return no("UNAVAILABLE", "%s: %v (a mailproxy being stopped still holds it): try again later", op, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return no("UNAVAILABLE", "%s: the session is ending", op)
	case errors.As(err, new(*upstream.Error)) && kind == upstream.Refused:
		log.Warn("graph refused the credential")
		return no("NOPERM", "%s: %v", op, err)
	case errors.As(err, new(*upstream.Error)):
		log.Warn("graph unavailable")
		return no("UNAVAILABLE", "%s: %v; try again later", op, err)
	}
	if ge, ok := errors.AsType[*graph.Error](err); ok {
		log.Info("graph refused the request")
		if ge.Status == 404 {
			return no("NONEXISTENT", "%s: %v", op, err)
		}
		return no("", "%s: %v", op, err)
	}
	log.Warn("graph request failed")
	return no("SERVERBUG", "%s: %v", op, err)
}

// oneLine keeps a response text on one line of printable ASCII.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = ' '
		}
	}
	return string(b)
}
