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
