package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The README's first command: `mailproxy demo`, then the curl lines it
// prints: send a message, read it back over IMAP and over POP3.
func TestDemoRelaysTheCurlLinesItPrints(t *testing.T) {
	need(t)
	addr, imapAddr, pop3Addr := freeAddr(t), freeAddr(t), freeAddr(t)
	p := &proxy{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(env.bin, "demo", "-smtp", addr, "-imap", imapAddr, "-pop3", pop3Addr)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	defer p.stop()
	waitListening(t, addr, p)
	var line string
	var reads []string
	for _, l := range strings.Split(p.logs.String(), "\n") {
		switch l = strings.TrimSpace(l); {
		case strings.Contains(l, "| curl "):
			line = l
		case strings.HasPrefix(l, "curl "):
			reads = append(reads, l)
		}
	}
	if line == "" || len(reads) != 2 {
		t.Fatalf("demo did not print a curl line to send and two to read:\n%s", p.logs.String())
	}
	out, err := exec.Command("bash", "-c", line).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.logs.String(), `msg="demo upstream accepted a message" authenticated_as=demo@mailproxy.test mechanism=XOAUTH2`) {
		if time.Now().After(deadline) {
			t.Fatalf("demo upstream did not get the message:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, read := range reads {
		out, err := exec.Command("bash", "-c", read).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Hello through mailproxy")) {
			t.Fatalf("%s: %v\n%s", read, err, out)
		}
	}
	// A wrong local password is refused.
	bad := strings.Replace(line, "--user demo:demo", "--user demo:nope", 1)
	if out, err := exec.Command("bash", "-c", bad).CombinedOutput(); err == nil || !bytes.Contains(out, []byte("Login denied")) {
		t.Fatalf("wrong demo password: %v %s", err, out)
	}
}
