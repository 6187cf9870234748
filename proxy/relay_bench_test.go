package proxy

// The relay loop on its hot path: an upstream that streams over TLS in
// small records, as Dovecot does, relayed to a local client on loopback.
// The baseline in the same run is the bare Go relay, io.Copy each way:
// what the relay adds is the difference between the two.
//
//	go test -run '^$' -bench Relay -cpuprofile cpu.out ./proxy/

import (
	"crypto/tls"
	"io"
	"net"
	"net/http/httptest"
	"testing"
)

func BenchmarkRelayTLSToLocal(b *testing.B) {
	const total = 64 << 20
	cert := httptest.NewTLSServer(nil) // for its certificate
	cfg := cert.TLS.Clone()
	cert.Close()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		chunk := make([]byte, 4<<10) // Dovecot writes about 4 KB at a time
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for sent := 0; sent < total; sent += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	b.Run("relay", func(b *testing.B) {
		relayFrom(b, l.Addr().String(), total, func(local, up net.Conn) {
			relay(local, up, nil, DefaultIdleTimeout, nil)
		})
	})
	b.Run("io.Copy", func(b *testing.B) {
		relayFrom(b, l.Addr().String(), total, func(local, up net.Conn) {
			go func() { io.Copy(up, local); up.Close() }()
			io.Copy(local, up)
			local.Close()
		})
	})
}

// relayFrom relays total bytes from the TLS server at addr to a local
// reader with pass, once per iteration.
func relayFrom(b *testing.B, addr string, total int, pass func(local, up net.Conn)) {
	b.SetBytes(int64(total))
	cpu0, hasCPU := processCPU()
	for b.Loop() {
		up, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		app, local := tcpPair(b)
		done := make(chan struct{})
		go func() {
			pass(local, up)
			close(done)
		}()
		if n, _ := io.Copy(io.Discard, app); n != int64(total) {
			b.Fatalf("relayed %d bytes, want %d", n, total)
		}
		app.Close()
		<-done
	}
	// The whole process's CPU: the TLS server and the reader are the same
	// in every variant, so a change to the relay shows as a change here.
	if cpu1, _ := processCPU(); hasCPU {
		b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(b.N)/float64(total>>20), "cpu-ms/MB")
	}
}
