package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Run with: MAILPROXY_E2E_NORACE=1 go test -run '^$' -bench 'IMAP' -benchtime 1x ./e2e/
// (as root, with the servers installed). Each benchmark measures mailproxy
// against a client talking to Dovecot directly in the same run and reports
// the ratio, so the machine's noise affects both alike.

// benchIMAP is a minimal IMAP client for the benchmarks.
type benchIMAP struct {
	c net.Conn
	r *bufio.Reader
}

// dialDirect logs in to Dovecot's IMAPS port with XOAUTH2, as mailproxy does.
func dialDirect(user, token string) (*benchIMAP, error) {
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(env.ca)
	pool.AppendCertsFromPEM(ca)
	c, err := tls.Dial("tcp", fmt.Sprintf("localhost:%d", imapsPort()), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		return nil, err
	}
	b := &benchIMAP{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
	return b, b.login("a1 AUTHENTICATE XOAUTH2 " + ir)
}

// dialProxy logs in to mailproxy with the local password.
func dialProxy(addr string) (*benchIMAP, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &benchIMAP{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	return b, b.login(imapLogin(localUser, localPass))
}

func (b *benchIMAP) login(cmd string) error {
	b.c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := b.r.ReadString('\n'); err != nil { // greeting
		b.c.Close()
		return err
	}
	if _, err := b.cmd(strings.TrimSuffix(cmd, "\r\n")); err != nil {
		b.c.Close()
		return err
	}
	b.c.SetDeadline(time.Time{})
	return nil
}

// cmd sends a tagged command and reads to its completion, discarding
// everything (literals included) and returning the bytes read.
func (b *benchIMAP) cmd(line string) (int64, error) {
	tag, _, _ := strings.Cut(line, " ")
	if _, err := io.WriteString(b.c, line+"\r\n"); err != nil {
		return 0, err
	}
	var n int64
	for {
		l, err := b.r.ReadSlice('\n')
		n += int64(len(l))
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return n, err
		}
		s := string(l)
		if strings.HasPrefix(s, tag+" ") {
			if !strings.HasPrefix(s, tag+" OK") {
				return n, fmt.Errorf("%s", strings.TrimSpace(s))
			}
			return n, nil
		}
		if i := strings.LastIndexByte(s, '{'); i >= 0 && strings.HasSuffix(s, "}\r\n") {
			size, _ := strconv.ParseInt(s[i+1:len(s)-3], 10, 64)
			m, err := io.CopyN(io.Discard, b.r, size)
			n += m
			if err != nil {
				return n, err
			}
		}
	}
}

// fillMaildir writes count messages of size bytes straight into user's
// Maildir (faster than delivering 200 MB), owned by vmail.
func fillMaildir(b *testing.B, user string, count, size int) {
	dir := filepath.Join(env.maildirOf(user), "new")
	if entries, _ := os.ReadDir(dir); len(entries) >= count {
		return
	}
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(env.maildirOf(user), sub), 0o700)
	}
	for i := range count {
		msg := bigMessage(fmt.Sprintf("bulk-%d", i), size*3/4)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.bulk%d.e2e", time.Now().Unix(), i)), msg, 0o600)
	}
	// The domain directory too: MkdirAll may have just made it, as root.
	if out, err := exec.Command("chown", "-R", "vmail:vmail", filepath.Dir(filepath.Dir(env.maildirOf(user)))).CombinedOutput(); err != nil {
		b.Fatalf("chown: %v %s", err, out)
	}
}

// BenchmarkIMAPFetch200MB fetches a 200 MB mailbox (FETCH 1:* BODY[])
// directly from Dovecot over TLS and through mailproxy (whose upstream leg
// is the same TLS), alternating, and reports both rates and their ratio.
func BenchmarkIMAPFetch200MB(b *testing.B) {
	need(b)
	const user = "bulk@example.test"
	fillMaildir(b, user, 200, 1<<20)
	addr := freeAddr(b)
	startProxy(b, "profiles:\n"+receivingProfile("bulk", addr, "", user, clientFor(user)), addr)
	token := env.idp.IssueToken(user, time.Hour)
	fetch := func(dial func() (*benchIMAP, error)) (int64, time.Duration) {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		defer c.c.Close()
		if _, err := c.cmd("s1 EXAMINE INBOX"); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		n, err := c.cmd("f1 FETCH 1:* BODY.PEEK[]")
		if err != nil {
			b.Fatal(err)
		}
		return n, time.Since(start)
	}
	var direct, through []float64
	for range b.N {
		for range 3 {
			n, d := fetch(func() (*benchIMAP, error) { return dialDirect(user, token) })
			direct = append(direct, float64(n)/d.Seconds()/1e6)
			n, d = fetch(func() (*benchIMAP, error) { return dialProxy(addr) })
			through = append(through, float64(n)/d.Seconds()/1e6)
		}
	}
	md, mt := median(direct), median(through)
	b.ReportMetric(md, "direct-MB/s")
	b.ReportMetric(mt, "mailproxy-MB/s")
	b.ReportMetric(mt/md, "ratio")
	b.Logf("direct MB/s %v, through mailproxy %v", rounded(direct), rounded(through))
}

// BenchmarkIMAPConcurrentLogins1000 starts 1,000 logins at once, directly
// (TLS + AUTHENTICATE XOAUTH2 with a cached token) and through mailproxy
// (LOGIN; mailproxy does the same upstream), and reports failures and
// latencies. At that load both are dominated by Dovecot's queue, so the
// latency mailproxy itself adds is also measured unloaded: 300 logins one
// at a time, direct and through mailproxy interleaved.
func BenchmarkIMAPConcurrentLogins1000(b *testing.B) {
	need(b)
	addr := freeAddr(b)
	startProxy(b, "profiles:\n"+receivingProfile("logins", addr, "", bob, clientFor(bob)), addr)
	token := env.idp.IssueToken(bob, time.Hour)
	storm := func(dial func() (*benchIMAP, error)) (lat []time.Duration, failures int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 1000 {
			wg.Go(func() {
				<-start
				t0 := time.Now()
				c, err := dial()
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures++
					if failures == 1 {
						b.Logf("first failure: %v", err)
					}
					return
				}
				lat = append(lat, d)
				go func() { c.cmd("z LOGOUT"); c.c.Close() }()
			})
		}
		close(start)
		wg.Wait()
		slices.Sort(lat)
		return lat, failures
	}
	for range b.N {
		dl, df := storm(func() (*benchIMAP, error) { return dialDirect(bob, token) })
		time.Sleep(2 * time.Second)
		pl, pf := storm(func() (*benchIMAP, error) { return dialProxy(addr) })
		time.Sleep(2 * time.Second)
		b.ReportMetric(float64(df), "direct-failures")
		b.ReportMetric(float64(pf), "mailproxy-failures")
		b.ReportMetric(ms(pct(dl, 50)), "direct-p50-ms")
		b.ReportMetric(ms(pct(dl, 99)), "direct-p99-ms")
		b.ReportMetric(ms(pct(pl, 50)), "mailproxy-p50-ms")
		b.ReportMetric(ms(pct(pl, 99)), "mailproxy-p99-ms")
		b.ReportMetric(ms(pct(pl, 50)-pct(dl, 50)), "storm-added-p50-ms")
		b.ReportMetric(ms(pct(pl, 99)-pct(dl, 99)), "storm-added-p99-ms")

		var sd, sp []time.Duration
		for range 300 {
			for _, v := range []struct {
				lat  *[]time.Duration
				dial func() (*benchIMAP, error)
			}{{&sd, func() (*benchIMAP, error) { return dialDirect(bob, token) }}, {&sp, func() (*benchIMAP, error) { return dialProxy(addr) }}} {
				t0 := time.Now()
				c, err := v.dial()
				if err != nil {
					b.Fatal(err)
				}
				*v.lat = append(*v.lat, time.Since(t0))
				c.cmd("z LOGOUT")
				c.c.Close()
			}
		}
		slices.Sort(sd)
		slices.Sort(sp)
		b.ReportMetric(ms(pct(sd, 50)), "serial-direct-p50-ms")
		b.ReportMetric(ms(pct(sp, 50)-pct(sd, 50)), "serial-added-p50-ms")
		b.ReportMetric(ms(pct(sp, 99)-pct(sd, 99)), "serial-added-p99-ms")
	}
}

// BenchmarkIMAPIdleSessionsRSS holds n sessions in IDLE through mailproxy
// and reports mailproxy's resident memory. Each relayed session takes two
// file descriptors; this benchmark raises nothing in the product, and on a
// machine whose hard limit is 20,000 descriptors (this one), the largest
// n is just under 10,000.
func BenchmarkIMAPIdleSessionsRSS(b *testing.B) {
	need(b)
	for _, n := range benchSessionCounts() {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				addr := freeAddr(b)
				p := startProxy(b, "profiles:\n"+receivingProfile("idle", addr, "", carol, clientFor(carol)), addr)
				base := rss(b, p.cmd.Process.Pid)
				conns := make(chan *benchIMAP, n)
				var wg sync.WaitGroup
				sem := make(chan struct{}, 100)
				var failed sync.Map
				for i := range n {
					sem <- struct{}{}
					wg.Go(func() {
						defer func() { <-sem }()
						c, err := dialProxy(addr)
						if err == nil {
							_, err = c.cmd("s SELECT INBOX")
						}
						if err == nil {
							_, err = io.WriteString(c.c, "i IDLE\r\n")
						}
						if err == nil {
							_, err = c.r.ReadString('\n') // "+ idling"
						}
						if err != nil {
							failed.Store(i, err)
							return
						}
						conns <- c
					})
				}
				wg.Wait()
				close(conns)
				failures := 0
				failed.Range(func(k, v any) bool {
					if failures++; failures == 1 {
						b.Logf("first failure: %v", v)
					}
					return true
				})
				// Idle sessions are a steady state: let the garbage of the
				// logins be collected and returned before reading RSS.
				time.Sleep(settle())
				now := rss(b, p.cmd.Process.Pid)
				held := len(conns)
				b.ReportMetric(float64(held), "sessions")
				b.ReportMetric(float64(failures), "failures")
				b.ReportMetric(float64(now)/1024, "RSS-MB")
				b.ReportMetric(float64(now-base)/float64(max(held, 1)), "KB/session")
				for c := range conns {
					c.c.Close()
				}
			}
		})
	}
}

// rss is the process's resident set in kB.
func rss(b testing.TB, pid int) int { return procStatusKB(b, pid, "VmRSS") }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchSessionCounts are the IDLE session counts to measure
// (MAILPROXY_BENCH_SESSIONS=n,n,... overrides).
func benchSessionCounts() []int {
	counts := []int{1000, 5000, 9500}
	if v := os.Getenv("MAILPROXY_BENCH_SESSIONS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(f); err == nil {
				counts = append(counts, n)
			}
		}
	}
	return counts
}

// settle is how long the IDLE benchmark waits before reading RSS
// (MAILPROXY_BENCH_SETTLE overrides 20s).
func settle() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MAILPROXY_BENCH_SETTLE")); err == nil {
		return d
	}
	return 20 * time.Second
}
