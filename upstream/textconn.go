package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// MailboxOptions configure an IMAP or POP3 upstream.
type MailboxOptions struct {
	Profile string
	// Addr is host:port.
	Addr string
	// TLS is "implicit", "starttls" or "none".
	TLS       string
	TLSConfig *tls.Config
	Auth      Auth
	Dialer    *net.Dialer
	// LoginTimeout bounds connecting and logging in (default 60 s).
	LoginTimeout time.Duration
	Logger       *slog.Logger
}

func (o *MailboxOptions) defaults() {
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.TLSConfig.ServerName == "" {
		o.TLSConfig = o.TLSConfig.Clone()
		o.TLSConfig.ServerName, _ = splitPort(o.Addr)
	}
}

// maxResponseLine bounds one upstream line before login (a CAPABILITY line
// is a few hundred octets).
const maxResponseLine = 64 << 10

// textConn is a line-oriented upstream connection before login.
type textConn struct {
	o    *MailboxOptions
	conn net.Conn
	r    *bufio.Reader
}

// dialText connects (and with implicit TLS, handshakes) within ctx's deadline.
func dialText(ctx context.Context, o *MailboxOptions) (*textConn, error) {
	conn, err := o.Dialer.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, &Error{Profile: o.Profile, Stage: StageConnect, Err: err}
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	c := &textConn{o: o, conn: conn, r: bufio.NewReader(conn)}
	if o.TLS == "implicit" {
		if err := c.startTLS(ctx); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// startTLS turns the connection into a TLS client. Bytes the server sent
// before the handshake would be a command injection: refuse them.
func (c *textConn) startTLS(ctx context.Context) error {
	if c.r.Buffered() > 0 {
		return &Error{Profile: c.o.Profile, Stage: StageTLS, Err: errors.New("server sent data before the TLS handshake")}
	}
	tc := tls.Client(c.conn, c.o.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return &Error{Profile: c.o.Profile, Stage: StageTLS, Err: err}
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return nil
}

// readLine returns one line without its CRLF.
func (c *textConn) readLine() (string, error) {
	var line []byte
	for {
		chunk, err := c.r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", c.fail(fmt.Errorf("reading: %w", err))
		}
		if len(line) > maxResponseLine {
			return "", c.fail(fmt.Errorf("line longer than %d octets", maxResponseLine))
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// writeLine sends line and CRLF.
func (c *textConn) writeLine(line string) error {
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return c.fail(fmt.Errorf("writing: %w", err))
	}
	return nil
}

// fail wraps a protocol or network error for the stage the caller is in.
func (c *textConn) fail(err error) error {
	return &Error{Profile: c.o.Profile, Stage: StageSession, Err: err}
}

// detach ends the line-oriented phase: deadlines are cleared and the
// connection is returned as is, with any bytes already read put first.
func (c *textConn) detach() net.Conn {
	c.conn.SetDeadline(time.Time{})
	if c.r.Buffered() == 0 {
		return c.conn
	}
	return &bufferedConn{Conn: c.conn, r: c.r}
}

// bufferedConn reads what its reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
