package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
)

// dotFlush is how much stuffed message dotWriter gathers before a write:
// two TLS records.
const dotFlush = 32 << 10

// dotBufs are dotWriter's buffers: a write from io.Copy (32 KB) may go
// past dotFlush before it is flushed.
var dotBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2*dotFlush+64); return &b }}

// dotWriter writes a message in the form DATA carries it (RFC 5321
// §4.5.2): a dot is doubled at the start of a line, and a bare LF becomes
// CRLF, as net/textproto's DotWriter does, but a line at a time rather
// than a byte at a time (that writer cost about 7 ms of CPU per MB). A
// trailing CRLF (or CR) is held back and dropped at the end: go-smtp's
// own writer, closed after this one, ends the message with CRLF "." CRLF.
type dotWriter struct {
	w       io.Writer
	pooled  *[]byte
	buf     []byte
	midLine bool // the last byte given was not the end of a line
	cr      bool // the last byte given was CR
}

func newDotWriter(w io.Writer) *dotWriter {
	b := dotBufs.Get().(*[]byte)
	return &dotWriter{w: w, pooled: b, buf: (*b)[:0]}
}

// release gives the buffer back; d is not used after.
func (d *dotWriter) release() {
	*d.pooled = d.buf[:0]
	dotBufs.Put(d.pooled)
	d.buf, d.pooled = nil, nil
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if !d.midLine && p[0] == '.' {
			d.buf = append(d.buf, '.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.buf = append(d.buf, p...)
			d.midLine, d.cr = true, p[len(p)-1] == '\r'
			break
		}
		d.buf = append(d.buf, p[:i]...)
		if i == 0 && !d.cr || i > 0 && p[i-1] != '\r' {
			d.buf = append(d.buf, '\r')
		}
		d.buf = append(d.buf, '\n')
		d.midLine, d.cr = false, false
		p = p[i+1:]
		if len(d.buf) >= dotFlush {
			if err := d.flush(2); err != nil {
				return n - len(p), err
			}
		}
	}
	if len(d.buf) >= dotFlush {
		if err := d.flush(2); err != nil {
			return n, err
		}
	}
	return n, nil
}

// flush writes all but the last keep bytes.
func (d *dotWriter) flush(keep int) error {
	k := max(len(d.buf)-keep, 0)
	if k == 0 {
		return nil
	}
	_, err := d.w.Write(d.buf[:k])
	d.buf = d.buf[:copy(d.buf, d.buf[k:])]
	return err
}

// Close writes what is left but a trailing CRLF or CR.
func (d *dotWriter) Close() error {
	switch {
	case bytes.HasSuffix(d.buf, []byte("\r\n")):
		d.buf = d.buf[:len(d.buf)-2]
	case bytes.HasSuffix(d.buf, []byte("\r")):
		d.buf = d.buf[:len(d.buf)-1]
	}
	return d.flush(0)
}

// startTLS reads the greeting, says EHLO and STARTTLS, and returns the TLS
// connection, which reads the greeting again first: go-smtp, given it,
// reads a greeting before its EHLO. mailproxy secures the connection
// itself, not through go-smtp, so that it holds the connection a message
// is written to (go-smtp keeps the TLS connection it makes to itself).
func startTLS(ctx context.Context, conn net.Conn, config *tls.Config) (net.Conn, error) {
	tp := textproto.NewConn(conn)
	_, greeting, err := tp.ReadResponse(220)
	if err != nil {
		return nil, fmt.Errorf("greeting: %s", replyText(err))
	}
	if err := tp.PrintfLine("EHLO localhost"); err != nil {
		return nil, err
	}
	_, ehlo, err := tp.ReadResponse(250)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %s", replyText(err))
	}
	if !hasExtension(ehlo, "STARTTLS") {
		return nil, errors.New("the server does not offer STARTTLS (set tls: none or implicit if that is what it speaks)")
	}
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("the server answered %s", replyText(err))
	}
	if tp.R.Buffered() > 0 {
		return nil, errors.New("server sent data before the TLS handshake")
	}
	tc := tls.Client(conn, config)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return &replayConn{Conn: tc, pending: []byte(replyLines(220, greeting))}, nil
}

// hasExtension reports whether an EHLO reply (its lines after the first)
// names ext.
func hasExtension(ehlo, ext string) bool {
	lines := strings.Split(ehlo, "\n")
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], ext) {
			return true
		}
	}
	return false
}

// replyLines is a reply as it was on the wire, from textproto's message.
func replyLines(code int, msg string) string {
	lines := strings.Split(msg, "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	return b.String()
}

// replyText is a reply textproto did not expect, as it was on the wire.
func replyText(err error) string {
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("%d %s", te.Code, strings.ReplaceAll(te.Msg, "\n", " "))
	}
	return err.Error()
}

// replayConn is a connection whose first reads return pending.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
