package app

// The SMTP DATA path in one process: an app's client, mailproxy's local
// listener and upstream session, and an upstream server that discards
// what it gets; beside it the same client talking to that server
// directly, in the same run.
//
//	go test -run '^$' -bench SMTPData -cpuprofile cpu.out ./app/

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"mailproxy/proxy"
	"mailproxy/upstream"
)

// sinkSession is an upstream SMTP session that takes any XOAUTH2 login
// and discards each message after reading it to its end.
type sinkSession struct{}

func (sinkSession) AuthMechanisms() []string             { return []string{"XOAUTH2"} }
func (sinkSession) Auth(string) (sasl.Server, error)     { return xoauth2Server{}, nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }

// xoauth2Server accepts any XOAUTH2 initial response.
type xoauth2Server struct{}

func (xoauth2Server) Next([]byte) ([]byte, bool, error) { return nil, true, nil }

type sinkBackend struct{}

func (sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{}, nil }

func listen(b *testing.B, serve func(net.Listener) error) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go serve(l)
	b.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

type fixedToken struct{}

func (fixedToken) Token(context.Context) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}, nil
}

// sendMessages sends msg n times on one session to addr.
func sendMessages(b *testing.B, addr string, auth sasl.Client, msg []byte, n int) {
	c, err := smtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			b.Fatal(err)
		}
	}
	for range n {
		if err := c.SendMail("app@example.test", []string{"to@example.test"}, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSMTPData1MB is the DATA path: one large message per session.
func BenchmarkSMTPData1MB(b *testing.B) { benchSMTP(b, 1<<20, 1) }

// BenchmarkSMTPData10KB is the path of each small message: 30 on a
// session, so upstream sessions end after their default 3 messages and
// the next ones are opened ahead.
func BenchmarkSMTPData10KB(b *testing.B) { benchSMTP(b, 10<<10, 30) }

// benchSMTP sends perSession messages of about size bytes on each session,
// directly to the sink and through mailproxy, in the same run.
func benchSMTP(b *testing.B, size, perSession int) {
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_+/=ABCDEF\r\n")
	msg := bytes.Repeat(line, size/len(line))
	sink := smtp.NewServer(sinkBackend{})
	sink.Domain, sink.AllowInsecureAuth = "sink", true
	sinkAddr := listen(b, sink.Serve)
	run := func(b *testing.B, addr string, auth sasl.Client) {
		b.SetBytes(int64(len(msg) * perSession))
		for b.Loop() {
			sendMessages(b, addr, auth, msg, perSession)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*perSession), "µs/msg")
	}
	b.Run("direct", func(b *testing.B) { run(b, sinkAddr, nil) })
	b.Run("mailproxy", func(b *testing.B) {
		up := upstream.NewSMTP(upstream.SMTPOptions{Profile: "bench", Addr: sinkAddr, TLS: "none",
			Auth: upstream.Auth{Mechanism: upstream.MechXOAUTH2, User: "u@example.test", Tokens: fixedToken{}}})
		defer up.Close()
		srv := proxy.NewSMTPServer(proxy.SMTPOptions{Profiles: []proxy.SMTPProfile{{Name: "bench", Sender: smtpSender{up},
			Users: []proxy.LocalUser{{Username: "app", Password: "pw"}}}}})
		run(b, listen(b, srv.Serve), sasl.NewPlainClient("", "app", "pw"))
	})
}
