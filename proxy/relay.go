package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout ends a relayed session after this long without a byte
// either way. RFC 3501 §5.4 has servers wait at least 30 minutes; IDLE
// clients re-issue IDLE every 29 minutes (RFC 2177).
const DefaultIdleTimeout = 31 * time.Minute

// Relay buffers: an idle session holds only the small ones; a read that
// fills the small buffer means data is streaming, and a large pooled buffer
// is used until the stream slows down.
const (
	smallRelayBuf = 512
	largeRelayBuf = 64 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeRelayBuf); return &b }}

// halfCloseGrace is how long the other direction may go on once one has
// ended (the server's BYE after the client's half-close, say).
const halfCloseGrace = 10 * time.Second

// relay passes bytes both ways between the local client and the upstream
// until both directions end, an error happens, or a side is silent for
// idle. pending are bytes the client already sent (read ahead before
// login); they go upstream first. A half-close is passed on; when one
// direction has ended, the other gets halfCloseGrace to finish, then both
// sides are closed together. It returns the bytes sent each way.
func relay(local, up net.Conn, pending []byte, idle time.Duration, act *activity) (toUp, toLocal int64) {
	defer local.Close()
	defer up.Close()
	if len(pending) > 0 {
		up.SetWriteDeadline(time.Now().Add(idle))
		n, err := up.Write(pending)
		toUp += int64(n)
		if err != nil {
			return toUp, 0
		}
	}
	if act == nil {
		act = &activity{}
	}
	act.touch()
	r := &pipes{idle: idle, act: act}
	var upN int64
	var wg sync.WaitGroup
	wg.Go(func() { upN = r.pump(up, local) })
	toLocal = r.pump(local, up)
	wg.Wait()
	return toUp + upN, toLocal
}

type pipes struct {
	idle   time.Duration
	act    *activity
	ending atomic.Bool // one direction has ended
}

// pump copies src to dst, then passes the end on: a clean EOF half-closes
// dst and leaves the other direction halfCloseGrace; an error ends both.
func (r *pipes) pump(dst, src net.Conn) int64 {
	n, err := r.copy(dst, src)
	if err == nil {
		closeWrite(dst)
	}
	if r.ending.Swap(true) || err != nil {
		src.Close()
		dst.Close()
		return n
	}
	// Wake the other direction, reading dst, into the shorter deadline.
	dst.SetReadDeadline(time.Now().Add(halfCloseGrace))
	return n
}

// deadline is when the next read must have returned.
func (r *pipes) deadline() time.Time {
	if r.ending.Load() {
		return time.Now().Add(halfCloseGrace)
	}
	return time.Now().Add(r.idle)
}

// copy copies src to dst until EOF (nil error) or an error; a read or
// write that waits past the deadline ends it.
func (r *pipes) copy(dst, src net.Conn) (int64, error) {
	small := make([]byte, smallRelayBuf)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	var total int64
	// The deadlines are moved on only once a sixteenth of the idle timeout
	// has passed since they were set, not on every read and write.
	var readBy, writeBy time.Time
	stale := func(by time.Time) bool { return r.ending.Load() || time.Until(by) < r.idle-r.idle/16 }
	for {
		if stale(readBy) {
			readBy = r.deadline()
			src.SetReadDeadline(readBy)
			if r.ending.Load() { // it may have been set between the two lines above
				readBy = time.Now().Add(halfCloseGrace)
				src.SetReadDeadline(readBy)
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			r.act.touch()
			if stale(writeBy) {
				writeBy = r.deadline()
				dst.SetWriteDeadline(writeBy)
			}
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return total, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Quiet this way; the session is idle only if quiet both ways.
			if !r.ending.Load() && r.act.idleFor() < r.idle {
				continue
			}
			return total, errIdle
		case err != nil:
			return total, err
		}
		switch {
		case large == nil && n == len(small):
			large = largeBufs.Get().(*[]byte)
			buf = *large
		case large != nil && n < len(small):
			largeBufs.Put(large)
			large, buf = nil, small
		}
	}
}

var errIdle = errors.New("idle timeout")

// apart runs f on a goroutine of its own and waits for it. An upstream
// login (TLS handshake, token request) grows a goroutine's stack to 16 KB
// or more, and a stack keeps its size until a garbage collection finds it
// mostly unused: run on the session's goroutine, which then relays for
// hours, it would cost that much for every idle session.
func apart(f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return <-done
}

// closeWrite half-closes c where the connection type allows it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// activity is when a session last moved a byte, and whether it is past its
// login, for graceful shutdown.
type activity struct {
	last     atomic.Int64
	relaying atomic.Bool
}

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

// idleFor reports how long the session has been quiet.
func (a *activity) idleFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - a.last.Load())
}
