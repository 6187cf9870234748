package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"mailproxy/upstream"
)

// DropMessage is one message of a maildrop mailproxy serves itself.
type DropMessage struct {
	ID string
	// Size is the message's size as the maildrop knows it: for Graph, the
	// store's size, close to (not always equal to) what RETR sends.
	Size int64
}

// Maildrop is a POP3 maildrop mailproxy serves itself (a Graph folder):
// the listing at login, each message's octets, and the removal at QUIT.
type Maildrop interface {
	List(ctx context.Context) ([]DropMessage, error)
	Open(ctx context.Context, id string) (io.ReadCloser, error)
	Remove(ctx context.Context, ids []string) error
}

// ServePOP3 is the POP3Backend that serves a Maildrop itself: the listing
// is a snapshot taken at login; DELE is applied at QUIT (RFC 1939's UPDATE
// state), and a failure there is told in the QUIT reply.
type ServePOP3 struct{ Drop Maildrop }

// Login implements POP3Backend.
func (b ServePOP3) Login(ctx context.Context) (LoggedIn, error) {
	msgs, err := b.Drop.List(ctx)
	if err != nil {
		return nil, err
	}
	return &dropSession{drop: b.Drop, msgs: msgs, deleted: make([]bool, len(msgs))}, nil
}

// servedCapabilities is what a served maildrop answers to CAPA (RFC 2449).
var servedCapabilities = []string{"TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION mailproxy"}

// UIDL derives a message's unique-id from its id: stable as long as the
// id is (Graph's immutable ids are), within RFC 1939's 1 to 70 printable
// characters.
func UIDL(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

type dropSession struct {
	drop    Maildrop
	msgs    []DropMessage
	deleted []bool
	w       *countingWriter
	c       Client
}

func (d *dropSession) Close() error { return nil }

// Serve implements LoggedIn: POP3's TRANSACTION state, then UPDATE at QUIT.
func (d *dropSession) Serve(ctx context.Context, c Client) (up, down int64) {
	r := bufio.NewReader(io.MultiReader(strings.NewReader(string(c.Pending)), c.Conn))
	cr := &countingReader{r: r}
	br := bufio.NewReaderSize(cr, 512)
	d.w = &countingWriter{w: bufio.NewWriterSize(c.Conn, 16<<10)}
	d.c = c
	defer func() { up, down = cr.n, d.w.n }()
	for {
		c.Conn.SetReadDeadline(time.Now().Add(c.IdleTimeout))
		line, err := readBoundedLine(br, maxPreauthLine)
		c.Touch()
		var fatal *errFatal
		switch {
		case errors.As(err, &fatal):
			d.reply("-ERR %s", fatal.msg)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			d.reply("-ERR [IN-USE] Autologout: idle for %s", c.IdleTimeout)
			return
		case err != nil:
			return
		}
		verb, arg, _ := strings.Cut(string(line), " ")
		c.Conn.SetWriteDeadline(time.Now().Add(c.IdleTimeout))
		if d.handle(ctx, strings.ToUpper(verb), strings.TrimSpace(arg), c) {
			return
		}
		c.Touch()
		// Pipelined commands are answered together (RFC 2449 PIPELINING).
		if br.Buffered() == 0 {
			d.w.Flush()
		}
	}
}

// handle runs one command; done ends the session.
func (d *dropSession) handle(ctx context.Context, verb, arg string, c Client) (done bool) {
	switch verb {
	case "STAT":
		n, size := d.count()
		d.reply("+OK %d %d", n, size)
	case "LIST", "UIDL":
		line := func(i int) string {
			if verb == "LIST" {
				return fmt.Sprintf("%d %d", i+1, d.msgs[i].Size)
			}
			return fmt.Sprintf("%d %s", i+1, UIDL(d.msgs[i].ID))
		}
		if arg != "" {
			if i, ok := d.message(arg); ok {
				d.reply("+OK %s", line(i))
			}
			break
		}
		n, size := d.count()
		d.reply("+OK %d messages (%d octets)", n, size)
		for i := range d.msgs {
			if !d.deleted[i] {
				d.reply("%s", line(i))
			}
		}
		d.reply(".")
	case "RETR":
		if i, ok := d.message(arg); ok {
			return d.send(ctx, i, -1)
		}
	case "TOP":
		num, lines, _ := strings.Cut(arg, " ")
		n, err := strconv.Atoi(strings.TrimSpace(lines))
		if err != nil || n < 0 {
			d.reply("-ERR TOP takes a message number and a number of lines")
			break
		}
		if i, ok := d.message(num); ok {
			return d.send(ctx, i, n)
		}
	case "DELE":
		if i, ok := d.message(arg); ok {
			d.deleted[i] = true
			d.reply("+OK message %d deleted", i+1)
		}
	case "RSET":
		clear(d.deleted)
		n, size := d.count()
		d.reply("+OK maildrop has %d messages (%d octets)", n, size)
	case "NOOP":
		d.reply("+OK")
	case "CAPA":
		d.reply("+OK Capability list follows\r\n%s\r\n.", strings.Join(servedCapabilities, "\r\n"))
	case "QUIT":
		d.quit(ctx)
		return true
	default:
		d.reply("-ERR %s is not a command here (logged in: STAT LIST UIDL RETR TOP DELE RSET NOOP QUIT CAPA)", oneLine(verb))
	}
	return false
}

// message finds the message numbered arg that is not deleted, or replies.
func (d *dropSession) message(arg string) (int, bool) {
	n, err := strconv.Atoi(arg)
	switch {
	case err != nil:
		d.reply("-ERR %q is not a message number", oneLine(arg))
	case n < 1 || n > len(d.msgs):
		d.reply("-ERR no such message, only %d in maildrop", len(d.msgs))
	case d.deleted[n-1]:
		d.reply("-ERR message %d already deleted", n)
	default:
		return n - 1, true
	}
	return 0, false
}

func (d *dropSession) count() (n int, size int64) {
	for i, m := range d.msgs {
		if !d.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

// send writes message i (with at most lines lines of body; -1 for all),
// with CRLF line ends and dot-stuffed. A failure before the first octet is
// an -ERR; one in the middle ends the session, since the reply is cut.
func (d *dropSession) send(ctx context.Context, i int, lines int) (done bool) {
	rc, err := d.drop.Open(ctx, d.msgs[i].ID)
	if err != nil {
		d.reply("%s", dropFailure(err, fmt.Sprintf("message %d", i+1)))
		return false
	}
	defer rc.Close()
	d.reply("+OK message follows")
	r := bufio.NewReaderSize(rc, 32<<10)
	inBody, body := false, 0
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: the rest follows as is.
			d.w.Write(line)
			continue
		}
		if len(line) > 0 {
			d.c.Touch() // moving bytes: a graceful shutdown lets it finish
			t := strings.TrimRight(string(line), "\r\n")
			if inBody {
				if lines >= 0 && body >= lines {
					break
				}
				body++
			} else if t == "" {
				inBody = true
			}
			if strings.HasPrefix(t, ".") {
				d.w.WriteString(".")
			}
			d.w.WriteString(t)
			d.w.WriteString("\r\n")
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return true // cut: the client sees no final dot
		}
	}
	d.reply(".")
	return false
}

// quit applies the DELEs (UPDATE) and says how it went.
func (d *dropSession) quit(ctx context.Context) {
	var ids []string
	for i, m := range d.msgs {
		if d.deleted[i] {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) > 0 {
		if err := d.drop.Remove(ctx, ids); err != nil {
			d.reply("%s", dropFailure(err, "some deleted messages are still in the maildrop"))
			d.w.Flush()
			return
		}
	}
	d.reply("+OK mailproxy signing off (%d messages deleted)", len(ids))
	d.w.Flush()
}

// dropFailure is the -ERR for a maildrop failure: [SYS/TEMP] when a retry
// may work, with what failed.
func dropFailure(err error, what string) string {
	if upstream.KindOf(err) == upstream.Temporary {
		return "-ERR [SYS/TEMP] " + oneLine(what+": "+err.Error()+"; try again later")
	}
	return "-ERR " + oneLine(what+": "+err.Error())
}

func (d *dropSession) reply(format string, args ...any) {
	fmt.Fprintf(d.w, format+"\r\n", args...)
}

// countingWriter counts what goes to the client.
type countingWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) WriteString(s string) (int, error) {
	n, err := c.w.WriteString(s)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() error { return c.w.Flush() }
