package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// laggy forwards TCP to target and delays every byte by oneWay in each
// direction: the provider's server some way off, as it is in use, where
// loopback has no distance at all.
func laggy(tb testing.TB, target string, oneWay time.Duration) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go lag(s, c, oneWay)
			go lag(c, s, oneWay)
		}
	}()
	return l.Addr().String()
}

// lag copies src to dst, each read written oneWay after it arrived; the end
// of src closes both.
func lag(dst, src net.Conn, oneWay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	chunks := make(chan chunk, 4096)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{buf[:n], time.Now().Add(oneWay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// sendMany is one app session that sends n messages: connect, [STARTTLS],
// AUTH, n × (MAIL, RCPT, DATA), QUIT.
func sendMany(addr string, tlsCfg *tls.Config, auth sasl.Client, msg []byte, n int) error {
	var c *smtp.Client
	var err error
	if tlsCfg != nil {
		c, err = smtp.DialStartTLS(addr, tlsCfg)
	} else {
		c, err = smtp.Dial(addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(auth); err != nil {
		return err
	}
	for range n {
		if err := c.SendMail("app@example.test", []string{"sink@example.test"}, bytes.NewReader(msg)); err != nil {
			return err
		}
	}
	return c.Quit()
}

// BenchmarkSMTPOverADistance sends 10 KB messages from 4 apps, each on one
// session, to Postfix 10 ms away (each way), directly and through
// mailproxy with its default of 3 messages per upstream session. Each
// upstream session costs 5 round trips before its first message (greeting,
// EHLO, STARTTLS and the TLS handshake, EHLO, AUTH) where a message costs 4;
// mailproxy opens the next session while a session carries its last
// message, so that none waits for them. Compare msgs/s of the two.
//
//	MAILPROXY_E2E_NORACE=1 go test -run '^$' -bench SMTPOverADistance -benchtime 240x ./e2e/
func BenchmarkSMTPOverADistance(b *testing.B) {
	need(b)
	const apps, oneWay = 4, 10 * time.Millisecond
	msg := []byte("From: app@example.test\r\nTo: sink@example.test\r\nSubject: distance\r\n\r\n" +
		strings.Repeat("benchmark body line of fifty characters or so....\r\n", 200))
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(env.ca)
	pool.AppendCertsFromPEM(ca)
	far := laggy(b, fmt.Sprintf("127.0.0.1:%d", env.subPort), oneWay)
	_, farPort, _ := net.SplitHostPort(far)
	run := func(b *testing.B, send func(n int) error) {
		per := (b.N + apps - 1) / apps
		var wg sync.WaitGroup
		errs := make(chan error, apps)
		b.ResetTimer()
		start := time.Now()
		for range apps {
			wg.Go(func() {
				if err := send(per); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.ReportMetric(float64(per*apps)/time.Since(start).Seconds(), "msgs/s")
	}
	b.Run("direct", func(b *testing.B) {
		token := env.idp.IssueToken(bob, time.Hour)
		run(b, func(n int) error {
			return sendMany("localhost:"+farPort, &tls.Config{RootCAs: pool, ServerName: "localhost"}, xoauth2{bob, token}, msg, n)
		})
	})
	b.Run("through-mailproxy", func(b *testing.B) {
		addr := freeAddr(b)
		startProxy(b, fmt.Sprintf(`profiles:
  sending:
    mailbox: %s
    smtp:
      listen: %s
      upstream: {host: "localhost:%s", tls: starttls, ca_file: %q}
    local_users: [{name: crm, username: %s, password: %q}]
    credentials:
%s`, bob, addr, farPort, env.ca, localUser, localPass, genericCreds()), addr)
		run(b, func(n int) error {
			return sendMany(addr, nil, sasl.NewPlainClient("", localUser, localPass), msg, n)
		})
	})
}
