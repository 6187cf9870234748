package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The README's first command: `mailproxy demo`, then the curl line it prints.
func TestDemoRelaysTheCurlLineItPrints(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	p := &proxy{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(env.bin, "demo", "-smtp", addr)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	defer p.stop()
	waitListening(t, addr, p)
	var line string
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(l, "| curl ") {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		t.Fatalf("demo printed no curl line:\n%s", p.logs.String())
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
	// A wrong local password is refused.
	bad := strings.Replace(line, "--user demo:demo", "--user demo:nope", 1)
	if out, err := exec.Command("bash", "-c", bad).CombinedOutput(); err == nil || !bytes.Contains(out, []byte("Login denied")) {
		t.Fatalf("wrong demo password: %v %s", err, out)
	}
}
