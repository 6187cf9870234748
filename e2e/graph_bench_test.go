package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// BenchmarkGraphSendMail16Senders: 16 SMTP apps at once through mailproxy
// to the Graph double's sendMail, which mailproxy keeps to 4 requests in
// flight. With latency, the double answers each request that much later
// (Graph's own take hundreds of ms): then 4 in flight bound the rate.
func BenchmarkGraphSendMail16Senders(b *testing.B) {
	need(b)
	g := graphDouble(b)
	msg := []byte("From: " + graphMailbox + "\r\nTo: sink@example.test\r\nSubject: bench\r\n\r\n" + strings.Repeat("benchmark body line\r\n", 500))
	for _, latency := range []time.Duration{0, 100 * time.Millisecond} {
		b.Run("latency="+latency.String(), func(b *testing.B) {
			g.Latency = latency
			defer func() { g.Latency = 0 }()
			addr := freeAddr(b)
			startProxy(b, "log: {level: warn}\nprofiles:\n"+graphProfile(b, "m365", addr, "", ""), addr)
			before := g.Requests()
			var sent atomic.Int64
			runSenders(b, func() error {
				sent.Add(1)
				return sendOnce(addr, nil, sasl.NewPlainClient("", localUser, localPass), msg)
			})
			b.ReportMetric(float64(g.Requests()-before)/float64(sent.Load()), "graph-requests/msg")
			b.ReportMetric(float64(g.MaxInFlight()), "max-in-flight")
		})
	}
}

// BenchmarkGraphLargeMessagePeakRSS relays 20 MB messages (a draft, an
// upload session, send) and reports mailproxy's peak resident memory
// after 1 and after 5: it must not grow with the number of messages.
func BenchmarkGraphLargeMessagePeakRSS(b *testing.B) {
	need(b)
	graphDouble(b)
	addr := freeAddr(b)
	p := startProxy(b, "log: {level: warn}\nprofiles:\n"+graphProfile(b, "m365", addr, "", ""), addr)
	msg := bytes.Replace(bigMessage("rss-graph", 20<<20), []byte("From: app@example.test"), []byte("From: "+graphMailbox), 1)
	msg = bytes.Replace(msg, []byte("To: bob@example.test"), []byte("To: sink@example.test"), 1)
	for _, n := range []int{1, 5} {
		b.Run(fmt.Sprintf("%dx20MB", n), func(b *testing.B) {
			for range b.N {
				for range n {
					if err := sendOnce(addr, nil, sasl.NewPlainClient("", localUser, localPass), msg); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(peakRSS(b, p.cmd.Process.Pid))/1024, "peak-RSS-MB")
		})
	}
}

// BenchmarkGraphPOP3Login10000 logs in to a 10,000-message Graph inbox
// over POP3: the time from PASS to +OK (the listing, paged), then to the
// end of UIDL, and the Graph requests it made.
func BenchmarkGraphPOP3Login10000(b *testing.B) {
	need(b)
	g := graphDouble(b)
	const bulk = "bulk@contoso.example"
	g.AddMailbox(bulk, "5f0c5c8e-1111-4222-8333-0000000b0b0b")
	if len(g.Messages(bulk, "inbox")) < 10000 {
		for i := range 10000 {
			g.Put(bulk, "inbox", []byte(fmt.Sprintf("From: a@x\r\nTo: %s\r\nSubject: %d\r\n\r\nmessage %d\r\n", bulk, i, i)))
		}
	}
	addr := freeAddr(b)
	startProxy(b, "log: {level: warn}\nprofiles:\n"+graphProfileAs("bulk", bulk, "", "", addr, "",
		fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: %s\n", env.idpURL, tenant, graphEnv.appID, graphSecret)), addr)
	var toOK, toUIDL time.Duration
	var requests int64
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		r := bufio.NewReader(c)
		r.ReadString('\n')
		fmt.Fprintf(c, "USER %s\r\n", localUser)
		r.ReadString('\n')
		before := g.Requests()
		start := time.Now()
		fmt.Fprintf(c, "PASS %s\r\n", localPass)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
			b.Fatalf("PASS: %q", l)
		}
		toOK += time.Since(start)
		fmt.Fprint(c, "UIDL\r\n")
		n := 0
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if l == ".\r\n" {
				break
			}
			n++
		}
		toUIDL += time.Since(start)
		requests += g.Requests() - before
		if n < 10001 {
			b.Fatalf("UIDL listed %d lines", n)
		}
		fmt.Fprint(c, "QUIT\r\n")
		c.Close()
	}
	b.ReportMetric(float64(toOK.Milliseconds())/float64(b.N), "ms-to-OK")
	b.ReportMetric(float64(toUIDL.Milliseconds())/float64(b.N), "ms-to-UIDL-end")
	b.ReportMetric(float64(requests)/float64(b.N), "graph-requests")
}

// BenchmarkGraphIMAPSelect50000 selects a 50,000-message Graph folder and
// lists it as clients do (UID FETCH 1:* (UID FLAGS RFC822.SIZE
// ENVELOPE)): the time to the first untagged response of SELECT and to
// FETCH's tagged OK, and the Graph requests made. first: no state yet (a
// full delta round); again: the same process, a second SELECT; restarted:
// a new process on the state the first left (one delta request).
func BenchmarkGraphIMAPSelect50000(b *testing.B) {
	need(b)
	g := graphDouble(b)
	const big = "fifty-thousand@contoso.example"
	g.AddMailbox(big, "5f0c5c8e-1111-4222-8333-0000000c0c0c")
	if len(g.Messages(big, "inbox")) < 50000 {
		t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 50000 {
			id := g.PutAt(big, "inbox", []byte(fmt.Sprintf("From: Sender %d <s%d@example.com>\r\nTo: %s\r\nSubject: message %d\r\nMessage-ID: <m%d@bench>\r\n\r\nbody %d\r\n", i, i%97, big, i, i, i)),
				t0.Add(time.Duration(i)*time.Second))
			if i%3 == 0 {
				g.SetRead(id, true)
			}
		}
	}
	var state string
	start := func(b *testing.B) (*proxy, string) {
		addr := freeAddr(b)
		return startProxy(b, "log: {level: warn}\nprofiles:\n"+graphIMAPProfile("big", big, addr, "", state, ""), addr), addr
	}
	list := func(b *testing.B, addr string) (first, selected, fetched time.Duration, requests int64) {
		c := dialRaw(b, addr)
		c.send(imapLogin(localUser, localPass))
		c.until("a1 OK")
		before := g.Requests()
		t0 := time.Now()
		c.send("a2 SELECT INBOX\r\n")
		c.line()
		first = time.Since(t0)
		c.until("a2 OK")
		selected = time.Since(t0)
		c.send("a3 UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)\r\n")
		n := 0
		for {
			l := c.line()
			if strings.HasPrefix(l, "a3 ") {
				if !strings.HasPrefix(l, "a3 OK") {
					b.Fatalf("FETCH: %s", l)
				}
				break
			}
			n++
		}
		fetched = time.Since(t0)
		if n != 50000 {
			b.Fatalf("FETCH listed %d messages", n)
		}
		c.send("a4 LOGOUT\r\n")
		return first, selected, fetched, g.Requests() - before
	}
	report := func(b *testing.B, first, selected, fetched time.Duration, requests int64) {
		n := float64(b.N)
		b.ReportMetric(float64(first.Milliseconds())/n, "ms-to-first-untagged")
		b.ReportMetric(float64(selected.Milliseconds())/n, "ms-to-SELECT-OK")
		b.ReportMetric(float64(fetched.Milliseconds())/n, "ms-to-FETCH-OK")
		b.ReportMetric(float64(requests)/n, "graph-requests")
	}
	b.Run("first", func(b *testing.B) {
		var f, s, d time.Duration
		var r int64
		for range b.N {
			state = b.TempDir()
			p, addr := start(b)
			f1, s1, d1, r1 := list(b, addr)
			f, s, d, r = f+f1, s+s1, d+d1, r+r1
			p.stop()
		}
		report(b, f, s, d, r)
	})
	b.Run("again", func(b *testing.B) {
		_, addr := start(b)
		list(b, addr)
		var f, s, d time.Duration
		var r int64
		for range b.N {
			f1, s1, d1, r1 := list(b, addr)
			f, s, d, r = f+f1, s+s1, d+d1, r+r1
		}
		report(b, f, s, d, r)
	})
	b.Run("restarted", func(b *testing.B) {
		var f, s, d time.Duration
		var r int64
		for range b.N {
			p, addr := start(b)
			f1, s1, d1, r1 := list(b, addr)
			f, s, d, r = f+f1, s+s1, d+d1, r+r1
			p.stop()
		}
		report(b, f, s, d, r)
	})
}

// BenchmarkGraphMbsync5000 is mbsync's first sync of the 5,000-message
// tree of 10 folders (TestMbsyncOverGraph's): wall time, Graph requests
// and mailproxy's peak RSS.
func BenchmarkGraphMbsync5000(b *testing.B) {
	need(b)
	g := graphDouble(b)
	box, _ := graphIMAPBox(b)
	fillTree(b, g, box, 1)
	var wall time.Duration
	var requests, rss int64
	for range b.N {
		addr := freeAddr(b)
		p := startProxy(b, "log: {level: warn}\nprofiles:\n"+graphIMAPProfile("tree", box, addr, "", b.TempDir(), ""), addr)
		rc := mbsyncrc(b.TempDir(), addr)
		before := g.Requests()
		wall += runMbsync(b, rc)
		requests += g.Requests() - before
		rss = max(rss, int64(peakRSS(b, p.cmd.Process.Pid)))
		p.stop()
	}
	b.ReportMetric(wall.Seconds()/float64(b.N), "s/sync")
	b.ReportMetric(float64(requests)/float64(b.N), "graph-requests")
	b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
}
