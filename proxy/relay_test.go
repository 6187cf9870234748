package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestRelayIdleMeansQuietBothWays(t *testing.T) {
	client, local := tcpPair(t)
	up, server := tcpPair(t)
	done := make(chan struct{})
	go func() { relay(local, up, []byte("a1 IDLE\r\n"), 300*time.Millisecond, nil); close(done) }()
	buf := make([]byte, 64)
	server.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _ := io.ReadAtLeast(server, buf, 9); string(buf[:n]) != "a1 IDLE\r\n" {
		t.Fatalf("pending bytes not sent first: %q", buf[:n])
	}
	// Only the server talks (an IDLE session): the relay must stay up.
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		server.Write([]byte("* 1 EXISTS\r\n"))
		client.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := client.Read(buf); err != nil {
			t.Fatalf("relay ended while one side was talking: %v", err)
		}
	}
	select {
	case <-done:
		t.Fatal("relay ended early")
	default:
	}
	// Quiet both ways: both sides are closed.
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("idle relay not ended")
	}
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("client side after idle: %v", err)
	}
}

func TestRelayPassesHalfCloseAndEndsTogether(t *testing.T) {
	client, local := tcpPair(t)
	up, server := tcpPair(t)
	done := make(chan struct{})
	go func() { relay(local, up, nil, time.Minute, nil); close(done) }()
	client.Write([]byte("a9 LOGOUT\r\n"))
	client.(*net.TCPConn).CloseWrite()
	server.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "a9 LOGOUT\r\n" {
		t.Fatalf("upstream got %q, %v (half-close not passed on)", got, err)
	}
	server.Write([]byte("* BYE\r\na9 OK\r\n")) // the answer after the half-close still arrives
	server.Close()
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, _ = io.ReadAll(client)
	if string(got) != "* BYE\r\na9 OK\r\n" {
		t.Fatalf("client got %q", got)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("relay did not end with both sides")
	}
}

// guarded wraps c as an admitted connection with no limits.
func guarded(c net.Conn) *guardedConn {
	return &guardedConn{Conn: c, l: guard(nil, "test", Limits{}, nil, nil, nil)}
}
