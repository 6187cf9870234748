package proxy

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// captureBackend keeps each message go-smtp's session is given: read by
// go-smtp's own reader, or with fast, by lineConn's.
type captureBackend struct {
	fast     bool
	maxBytes int64
	got      chan []byte
}

func (b *captureBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &captureSession{b: b, c: c}, nil
}

type captureSession struct {
	b *captureBackend
	c *smtp.Conn
}

func (s *captureSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *captureSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *captureSession) Reset()                               {}
func (s *captureSession) Logout() error                        { return nil }
func (s *captureSession) Data(r io.Reader) error {
	if s.b.fast {
		m := s.c.Conn().(*lineConn).message(s.b.maxBytes, 4000)
		defer m.drain()
		r = m
	}
	msg, err := io.ReadAll(r)
	s.b.got <- msg
	return err
}

// smtpExchange sends script on one connection to a go-smtp server and
// returns every reply line and the messages its session got.
func smtpExchange(t *testing.T, fast bool, maxBytes int64, script string) (replies string, msgs [][]byte) {
	t.Helper()
	b := &captureBackend{fast: fast, maxBytes: maxBytes, got: make(chan []byte, 100)}
	srv := smtp.NewServer(b)
	srv.Domain, srv.MaxMessageBytes, srv.MaxLineLength = "test", maxBytes, 4000
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if fast {
		go srv.Serve(lineListener{l})
	} else {
		go srv.Serve(l)
	}
	defer srv.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		io.WriteString(c, script)
		c.(*net.TCPConn).CloseWrite()
	}()
	out, _ := io.ReadAll(c)
	close(b.got)
	for m := range b.got {
		msgs = append(msgs, m)
	}
	return string(out), msgs
}

const smtpHead = "EHLO app\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"

// The message and the replies are those of go-smtp's own reader, for
// random messages of dots, CRLFs, bare LFs and CRs, and text; the command
// after the message is answered, so the connection stays in step.
func TestLineConnReadsMessagesAsGoSMTPDoes(t *testing.T) {
	// Two quirks of go-smtp's state machine are left out: it drops ".\r"
	// before anything but LF at the start of a line (lineConn drops only
	// the dot), and after "\r\r\n" it is not at the start of a line
	// (lineConn is: a line ends with CRLF).
	quirk := regexp.MustCompile(`(^|\r\n)\.\r([^\n]|$)|\r\r`)
	parts := []string{"a", "text ", ".", "..", "\r\n", "\r\n", "\n", "\r", "x\r\n.\r\n"[:3]}
	rng := rand.New(rand.NewPCG(1, 2))
	compared := 0
	for i := 0; i < 1000; i++ {
		var body strings.Builder
		for range rng.IntN(60) {
			body.WriteString(parts[rng.IntN(len(parts))])
		}
		if i%7 == 0 {
			body.WriteString(strings.Repeat("0123456789\r\n", rng.IntN(3000))) // across the buffer
			body.WriteString(strings.Repeat("x", 3990))
		}
		body.WriteString("\r\n")
		msg := body.String()
		if quirk.MatchString(msg) || strings.Contains(msg, "\r\n.\r\n") || strings.HasPrefix(msg, ".\r\n") {
			continue
		}
		compared++
		script := smtpHead + msg + ".\r\n" + smtpHead + "second\r\n.\r\nQUIT\r\n"
		wantReplies, want := smtpExchange(t, false, 0, script)
		gotReplies, got := smtpExchange(t, true, 0, script)
		if gotReplies != wantReplies {
			t.Fatalf("message %q: replies\n%s\nwant (go-smtp's reader)\n%s", msg, gotReplies, wantReplies)
		}
		if len(got) != 2 || len(want) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
			t.Fatalf("message %q: read %q, go-smtp's reader %q", msg, got, want)
		}
	}
	if compared < 200 {
		t.Fatalf("only %d messages compared", compared)
	}
}

func TestLineConnMessageLimits(t *testing.T) {
	t.Run("over max bytes, then a message that fits", func(t *testing.T) {
		replies, msgs := smtpExchange(t, true, 100, smtpHead+strings.Repeat("x", 99)+"\r\n.\r\n"+
			smtpHead+strings.Repeat("y", 98)+"\r\n.\r\nQUIT\r\n")
		if !strings.Contains(replies, "552 5.3.4") || !strings.Contains(replies, "250 2.0.0") || !strings.Contains(replies, "221 ") {
			t.Fatalf("replies:\n%s", replies)
		}
		if len(msgs) != 2 || len(msgs[0]) != 100 || string(msgs[1]) != strings.Repeat("y", 98)+"\r\n" {
			t.Fatalf("messages: %q", msgs)
		}
	})
	t.Run("a line too long is refused and the connection closed", func(t *testing.T) {
		replies, _ := smtpExchange(t, true, 0, smtpHead+strings.Repeat("z", 5000)+"\r\n.\r\n"+smtpHead)
		lines := strings.Split(strings.TrimSpace(replies), "\r\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "554 5.6.0 The message has a line longer than 4000 octets") {
			t.Fatalf("replies:\n%s", replies)
		}
	})
	t.Run("the connection ends within the message", func(t *testing.T) {
		replies, msgs := smtpExchange(t, true, 0, smtpHead+"half a message\r\n.")
		if !strings.HasPrefix(replies, "220 ") || strings.Contains(replies, "queued") || len(msgs) != 1 {
			t.Fatalf("replies:\n%s\nmessages %q", replies, msgs)
		}
	})
}

// Commands go to go-smtp a line per read, however the app writes them.
func TestLineConnReadsALineAtATime(t *testing.T) {
	c := &lineConn{br: bufio.NewReaderSize(strings.NewReader("EHLO a\r\nMAIL FROM:<x>\r\nDATA\r\nbody"), 64)}
	var lines []string
	p := make([]byte, 4096)
	for {
		n, err := c.Read(p)
		if err != nil {
			break
		}
		lines = append(lines, string(p[:n]))
	}
	if want := []string{"EHLO a\r\n", "MAIL FROM:<x>\r\n", "DATA\r\n", "body"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("reads %q, want %q", lines, want)
	}
}
