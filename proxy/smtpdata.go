package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net"

	"github.com/emersion/go-smtp"
)

// lineBuf is a local SMTP connection's read buffer.
const lineBuf = 16 << 10

// lineListener hands go-smtp lineConns.
type lineListener struct{ net.Listener }

func (l lineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lineConn{Conn: c, br: bufio.NewReaderSize(c, lineBuf)}, nil
}

// lineConn is a plaintext local SMTP connection as go-smtp reads it: a
// read returns at most one line, so go-smtp never holds bytes past the
// command it is answering. After DATA, the message is then read here
// (message), a line at a time, rather than by go-smtp's reader, which
// takes a byte at a time (about 10 ms of CPU per MB). The line that ends
// the message is left for go-smtp to read.
type lineConn struct {
	net.Conn
	br *bufio.Reader
	// err, once set, is what every read returns: the connection is
	// closed after the reply being written.
	err error
}

func (c *lineConn) NetConn() net.Conn { return c.Conn }

func (c *lineConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	buf, err := c.buffered()
	if len(buf) == 0 {
		return 0, err
	}
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	}
	n := copy(p, buf)
	c.br.Discard(n)
	return n, nil
}

// buffered returns the bytes read ahead, reading if there are none.
func (c *lineConn) buffered() ([]byte, error) {
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
	}
	return c.br.Peek(c.br.Buffered())
}

// message reads the message after DATA's 354: RFC 5321 §4.5.2, as
// go-smtp's reader does it (a line begins after CRLF; a dot that begins
// one is removed; CRLF "." CRLF ends the message), with go-smtp's limits:
// maxBytes of message and maxLine octets in a line (0: no limit).
func (c *lineConn) message(maxBytes int64, maxLine int) *messageReader {
	if maxLine <= 0 {
		maxLine = math.MaxInt
	}
	return &messageReader{c: c, left: maxBytes, limited: maxBytes > 0, maxLine: maxLine}
}

type messageReader struct {
	c       *lineConn
	limited bool
	left    int64
	maxLine int
	line    int  // octets since the last LF
	midLine bool // not after CRLF
	cr      bool // the last octet was CR
	err     error
}

func (m *messageReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && m.err == nil {
		br := m.c.br
		if n > 0 && br.Buffered() < 3 {
			break // what there is, before waiting for more
		}
		buf, err := m.c.buffered()
		if len(buf) == 0 {
			m.err = unexpected(err)
			break
		}
		if !m.midLine && buf[0] == '.' {
			if len(buf) < 3 {
				if buf, err = br.Peek(3); err != nil {
					m.err = unexpected(err)
					break
				}
			}
			if buf[1] == '\r' && buf[2] == '\n' {
				m.err = io.EOF
				break
			}
			br.Discard(1)
			m.midLine, m.line = true, m.line+1
			continue
		}
		if m.limited && m.left == 0 {
			m.err = smtp.ErrDataTooLarge
			break
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[:i+1]
		}
		k := min(len(buf), len(p)-n)
		if m.limited {
			k = int(min(int64(k), m.left))
			m.left -= int64(k)
		}
		chunk := p[n : n+copy(p[n:], buf[:k])]
		br.Discard(k)
		n += k
		if m.line += k; m.line > m.maxLine {
			m.err = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
				Message: fmt.Sprintf("The message has a line longer than %d octets (RFC 5322 allows 998): wrap it", m.maxLine)}
		}
		if chunk[k-1] == '\n' {
			m.midLine = !(k > 1 && chunk[k-2] == '\r' || k == 1 && m.cr)
			m.line, m.cr = 0, false
		} else {
			m.midLine, m.cr = true, chunk[k-1] == '\r'
		}
	}
	if n > 0 && m.err != io.EOF {
		return n, nil
	}
	return n, m.err
}

// unexpected is an end of the connection within a message.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// drain reads the rest of the message, as go-smtp does before it answers,
// so that the app is in step with the reply. After a line too long (the
// connection may be anything), the connection is closed after the reply.
func (m *messageReader) drain() {
	m.limited = false
	if m.err == smtp.ErrDataTooLarge {
		m.err = nil
	}
	io.Copy(io.Discard, m)
	if m.err != io.EOF {
		m.c.err = net.ErrClosed
	}
}
