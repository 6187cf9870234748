package e2e

import (
	"bytes"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The README's first command: `mailproxy demo`, then the curl lines it
// prints: send a message, read it back over IMAP and over POP3.
func TestDemoRelaysTheCurlLinesItPrints(t *testing.T) {
	need(t)
	addr, imapAddr, pop3Addr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	p := &proxy{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(env.bin, "demo", "-smtp", addr, "-imap", imapAddr, "-pop3", pop3Addr, "-admin", adminAddr)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	defer p.stop()
	waitListening(t, addr, p)
	var sends, reads []string
	for _, l := range strings.Split(p.logs.String(), "\n") {
		switch l = strings.TrimSpace(l); {
		case strings.Contains(l, "| curl "):
			sends = append(sends, l)
		case strings.HasPrefix(l, "curl "):
			reads = append(reads, l)
		}
	}
	if len(sends) != 2 || len(reads) != 5 {
		t.Fatalf("demo did not print two curl lines to send and five to read:\n%s", p.logs.String())
	}
	line := sends[0]
	signedIn, graphReads := reads[2], reads[3:]
	reads = reads[:2]
	// Microsoft 365 through Graph: sendMail, then the Graph inbox over
	// IMAP and POP3.
	if out, err := exec.Command("bash", "-c", sends[1]).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", sends[1], err, out)
	}
	for _, read := range graphReads {
		if out, err := exec.Command("bash", "-c", read).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Hello through Graph")) {
			t.Fatalf("%s: %v\n%s", read, err, out)
		}
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
	// The third read uses a grant a person gives on the admin page: none yet.
	if out, err := exec.Command("bash", "-c", signedIn).CombinedOutput(); err == nil || !bytes.Contains(out, []byte("Login denied")) {
		t.Fatalf("read before anyone signed in: %v %s", err, out)
	}
	signInOnDemoAdminPage(t, "http://"+adminAddr)
	if out, err := exec.Command("bash", "-c", signedIn).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Hello through mailproxy")) {
		t.Fatalf("%s after signing in: %v\n%s", signedIn, err, out)
	}
	// A wrong local password is refused.
	bad := strings.Replace(line, "--user demo:demo", "--user demo:nope", 1)
	if out, err := exec.Command("bash", "-c", bad).CombinedOutput(); err == nil || !bytes.Contains(out, []byte("Login denied")) {
		t.Fatalf("wrong demo password: %v %s", err, out)
	}
}

// signInOnDemoAdminPage does what the demo tells a person to do: log in to
// the admin page, press Get token for signed-in, and sign in on the
// issuer's page (the Chromium test drives the same page in a browser).
func signInOnDemoAdminPage(t *testing.T, admin string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	req, _ := http.NewRequest("POST", admin+"/profiles/signed-in/signin", nil)
	req.SetBasicAuth("demo", "demo")
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), admin) {
			r.SetBasicAuth("demo", "demo") // the browser resends the page's login
		}
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := submitSignIn(t, c, resp, "demo@mailproxy.test", "demo")
	if !strings.Contains(body, "has a new grant") || !strings.Contains(body, "valid until") {
		t.Fatalf("after signing in, the browser shows %s:\n%s", resp.Request.URL, body)
	}
}
