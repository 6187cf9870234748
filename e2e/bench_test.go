package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// Run with: MAILPROXY_E2E_NORACE=1 go test -run '^$' -bench . ./e2e/
// (as root, with the servers installed). Compare the sub-benchmarks of one run.

const senders = 16

// sendOnce is one app session: connect, [STARTTLS, AUTH], one message, QUIT.
func sendOnce(addr string, tlsCfg *tls.Config, auth sasl.Client, msg []byte) error {
	return sendMany(addr, tlsCfg, auth, msg, 1)
}

type xoauth2 struct{ user, token string }

func (x xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}
func (x xoauth2) Next([]byte) ([]byte, error) { return []byte{}, nil }

func runSenders(b *testing.B, send func() error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	per := (b.N + senders - 1) / senders
	start := time.Now()
	for range senders {
		wg.Go(func() {
			for range per {
				if err := send(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per*senders)/time.Since(start).Seconds(), "msgs/s")
}

func BenchmarkRelay16Senders(b *testing.B) {
	need(b)
	msg := []byte("From: app@example.test\r\nTo: sink@example.test\r\nSubject: bench\r\n\r\n" + strings.Repeat("benchmark body line\r\n", 200))
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(env.ca)
	pool.AppendCertsFromPEM(ca)
	token := env.idp.IssueToken(bob, time.Hour)
	b.Run("direct-to-postfix", func(b *testing.B) {
		addr := fmt.Sprintf("localhost:%d", env.subPort)
		runSenders(b, func() error {
			return sendOnce(addr, &tls.Config{RootCAs: pool, ServerName: "localhost"}, xoauth2{bob, token}, msg)
		})
	})
	b.Run("through-mailproxy", func(b *testing.B) {
		addr := freeAddr(b)
		startProxy(b, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
		runSenders(b, func() error {
			return sendOnce(addr, nil, sasl.NewPlainClient("", localUser, localPass), msg)
		})
	})
}

// BenchmarkLargeMessagePeakRSS relays one message of each size and reports
// mailproxy's peak resident memory (VmHWM) after it: it must not grow with
// the message.
func BenchmarkLargeMessagePeakRSS(b *testing.B) {
	need(b)
	for _, mb := range []int{1, 100} {
		b.Run(fmt.Sprintf("%dMB", mb), func(b *testing.B) {
			addr := freeAddr(b)
			p := startProxy(b, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
			msg := bigMessage("rss-"+strconv.Itoa(mb), mb<<20*3/4)
			for range b.N {
				if err := sendOnce(addr, nil, sasl.NewPlainClient("", localUser, localPass), msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(peakRSS(b, p.cmd.Process.Pid))/1024, "peak-RSS-MB")
		})
	}
}

// peakRSS is the process's peak resident set (high-water mark) in kB.
func peakRSS(b testing.TB, pid int) int { return procStatusKB(b, pid, "VmHWM") }

// procStatusKB reads a kB field of /proc/PID/status.
func procStatusKB(b testing.TB, pid int, field string) int {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb
		}
	}
	return 0
}
