package upstream

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"testing"
)

// textprotoStuffed is the message as net/textproto's DotWriter sends it,
// final dot line included.
func textprotoStuffed(msg string) string {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	w := textproto.NewWriter(bw).DotWriter()
	io.WriteString(w, msg)
	w.Close()
	return b.String()
}

// dotWriter's output, then go-smtp's final "\r\n.\r\n", is what
// textproto's DotWriter sends, however the message is cut into writes.
func TestDotWriterStuffsAsTextprotoDoes(t *testing.T) {
	parts := []string{"a", "text ", ".", "..", "\r\n", "\r\n", "\n", ".\r\n", "\r\n.\r\n"}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		if i%5 == 0 {
			b.WriteString(strings.Repeat("0123456789\r\n", rng.IntN(8000))) // past dotFlush
		}
		msg := b.String()
		var out bytes.Buffer
		d := newDotWriter(&out)
		for rest := msg; rest != ""; {
			k := min(len(rest), 1+rng.IntN(40000))
			if n, err := d.Write([]byte(rest[:k])); n != k || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
			rest = rest[k:]
		}
		d.Close()
		d.release()
		if got, want := out.String()+"\r\n.\r\n", textprotoStuffed(msg); got != want {
			t.Fatalf("message %q:\nsent %q\nwant %q", msg, got, want)
		}
	}
}

// A bare CR is passed on; one that ends the message is not doubled up
// with the CRLF of the final dot line.
func TestDotWriterBareCR(t *testing.T) {
	for msg, want := range map[string]string{
		"a\rb\r\n": "a\rb",
		"a\r":      "a",
		".\r":      "..",
		"\r\r\n":   "\r",
	} {
		var out bytes.Buffer
		d := newDotWriter(&out)
		io.WriteString(d, msg)
		d.Close()
		if out.String() != want {
			t.Errorf("%q: sent %q, want %q", msg, out.String(), want)
		}
	}
}

// A server that does not offer STARTTLS, or that sends more after its
// 220 than the reply (a command injection, CVE-2011-0411), is refused
// before anything secret is sent.
func TestStartTLSRefusals(t *testing.T) {
	for name, tc := range map[string]struct{ ehlo, starttls, want string }{
		"not offered": {"250-fake\r\n250 AUTH XOAUTH2\r\n", "", "does not offer STARTTLS"},
		"refused":     {"250-fake\r\n250 STARTTLS\r\n", "454 4.7.0 TLS not available\r\n", "the server answered 454 4.7.0 TLS not available"},
		"injection":   {"250-fake\r\n250 STARTTLS\r\n", "220 go ahead\r\n250 injected\r\n", "server sent data before the TLS handshake"},
	} {
		t.Run(name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				r := bufio.NewReader(server)
				io.WriteString(server, "220 fake ESMTP\r\n")
				r.ReadString('\n')
				io.WriteString(server, tc.ehlo)
				r.ReadString('\n')
				io.WriteString(server, tc.starttls)
				r.ReadString('\n')
			}()
			_, err := startTLS(context.Background(), client, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
