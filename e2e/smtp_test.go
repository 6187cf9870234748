package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type sendResult struct {
	OK   bool   `json:"ok"`
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

// pySend sends msg with Python's smtplib (user "" for no AUTH).
func pySend(t testing.TB, addr, user, pass, to string, msg []byte, count int) sendResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	f, err := os.CreateTemp(env.work, "msg-*.eml")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(msg)
	f.Close()
	defer os.Remove(f.Name())
	out, err := exec.Command("/usr/bin/python3", "testdata/smtpsend.py", host, port, user, pass,
		"app@example.test", to, f.Name(), fmt.Sprint(count)).CombinedOutput()
	if err != nil {
		t.Fatalf("smtpsend.py: %v\n%s", err, out)
	}
	var r sendResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		t.Fatalf("smtpsend.py output %q: %v", out, err)
	}
	return r
}

func simpleMessage(marker string) []byte {
	return []byte(fmt.Sprintf("From: app@example.test\r\nTo: bob@example.test\r\nSubject: %s\r\nMessage-ID: <%s@e2e>\r\n\r\nbody of %s\r\n", marker, marker, marker))
}

func TestLegacyClientsSendThroughMailproxyToPostfix(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
	host, port, _ := net.SplitHostPort(addr)

	clients := map[string]func(marker string) ([]byte, error){
		"swaks AUTH LOGIN": func(m string) ([]byte, error) {
			return exec.Command("swaks", "--server", host, "--port", port, "--auth", "LOGIN",
				"--auth-user", localUser, "--auth-password", localPass, "--from", "app@example.test",
				"--to", bob, "--header", "Subject: "+m, "--body", "swaks body "+m).CombinedOutput()
		},
		"swaks AUTH PLAIN": func(m string) ([]byte, error) {
			return exec.Command("swaks", "--server", host, "--port", port, "--auth", "PLAIN",
				"--auth-user", localUser, "--auth-password", localPass, "--from", "app@example.test",
				"--to", bob, "--header", "Subject: "+m, "--body", "swaks body "+m).CombinedOutput()
		},
		"curl": func(m string) ([]byte, error) {
			cmd := exec.Command("curl", "-sS", "--url", "smtp://"+addr, "--user", localUser+":"+localPass,
				"--mail-from", "app@example.test", "--mail-rcpt", bob, "-T", "-")
			cmd.Stdin = bytes.NewReader(simpleMessage(m))
			return cmd.CombinedOutput()
		},
		"python smtplib": func(m string) ([]byte, error) {
			r := pySend(t, addr, localUser, localPass, bob, simpleMessage(m), 1)
			if !r.OK {
				return nil, fmt.Errorf("%d %s", r.Code, r.Msg)
			}
			return nil, nil
		},
	}
	for name, send := range clients {
		t.Run(name, func(t *testing.T) {
			marker := uniqueMarker(t)
			if out, err := send(marker); err != nil {
				t.Fatalf("send failed: %v\n%s", err, out)
			}
			got := waitForMessage(t, bob, marker)
			if !bytes.Contains(got, []byte("Received: from")) {
				t.Errorf("message did not pass through Postfix:\n%s", got)
			}
		})
	}
}

func TestAppWithoutAuthSendsOnNoAuthProfile(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`profiles:
  noauth:
    mailbox: %s
    smtp:
      listen: %s
      local_auth: none
%s    credentials:
%s`, bob, addr, upstreamYAML(""), genericCreds())
	startProxy(t, cfg, addr)
	host, port, _ := net.SplitHostPort(addr)
	marker := uniqueMarker(t)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "app@example.test",
		"--to", bob, "--header", "Subject: "+marker).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks without AUTH: %v\n%s", err, out)
	}
	waitForMessage(t, bob, marker)
}

// bigMessage has what breaks naive relays: 8-bit text, a 998-octet line,
// lines that start with dots, and an attachment of attach bytes.
func bigMessage(marker string, attach int) []byte {
	var b bytes.Buffer
	// With From, Date and Message-ID present Postfix adds only trace headers on top.
	fmt.Fprintf(&b, "From: app@example.test\r\nTo: bob@example.test\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nSubject: %s\r\nMessage-ID: <%s@e2e>\r\n", marker, marker)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n")
	b.WriteString("--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	b.WriteString("Grüße aus Köln — 8-bit body, ünïcödé ✓\r\n")
	b.WriteString(".a line starting with a dot\r\n..two dots\r\n.\r\n. dot space\r\n")
	b.WriteString(strings.Repeat("L", 998) + "\r\n")
	b.WriteString("\r\n--BOUNDARY\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	raw := make([]byte, attach)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--BOUNDARY--\r\n")
	return b.Bytes()
}

func TestMessageArrivesByteForByte(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
	for _, size := range []int{1 << 10, 20 << 20} {
		t.Run(fmt.Sprintf("attachment %d bytes", size), func(t *testing.T) {
			marker := uniqueMarker(t)
			msg := bigMessage(marker, size)
			if r := pySend(t, addr, localUser, localPass, bob, msg, 1); !r.OK {
				t.Fatalf("send: %d %s", r.Code, r.Msg)
			}
			got := waitForMessage(t, bob, marker)
			if !bytes.HasSuffix(got, msg) {
				i := 0
				body := got[bytes.Index(got, []byte("From: app@")):]
				for i < len(body) && i < len(msg) && body[i] == msg[i] {
					i++
				}
				t.Fatalf("stored message differs from the sent one at byte %d of %d (stored %d bytes)", i, len(msg), len(body))
			}
		})
	}
}

func TestWrongLocalPasswordGets535(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
	marker := uniqueMarker(t)
	r := pySend(t, addr, localUser, "not-the-password", bob, simpleMessage(marker), 1)
	if r.OK || r.Code != 535 {
		t.Fatalf("wrong password: got %+v, want 535", r)
	}
	r = pySend(t, addr, "nobody", localPass, bob, simpleMessage(marker), 1)
	if r.OK || r.Code != 535 {
		t.Fatalf("unknown user: got %+v, want 535", r)
	}
	r = pySend(t, addr, "", "", bob, simpleMessage(marker), 1)
	if r.OK || r.Code/100 != 5 {
		t.Fatalf("no AUTH on a password profile: got %+v, want 5xx", r)
	}
}

func TestTokenEndpointFailureGives4xxAndRecoversWithoutRestart(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	// A credential nobody has fetched yet, so the cache is empty.
	creds := fmt.Sprintf(`      type: microsoft365
      authority: %s
      tenant_id: %s
      client_id: %s
      client_secret: %s
`, env.idpURL, tenant, msSecretApp, msSecret)
	env.idp.SetDown(true)
	defer env.idp.SetDown(false)
	p := startProxy(t, "profiles:\n"+oauthProfile("sending", addr, alice, creds, ""), addr)

	marker := uniqueMarker(t)
	r := pySend(t, addr, localUser, localPass, bob, simpleMessage(marker), 1)
	if r.OK || r.Code/100 != 4 {
		t.Fatalf("token endpoint down: got %+v, want a 4xx", r)
	}
	t.Logf("endpoint down: %d %s", r.Code, r.Msg)

	env.idp.SetDown(false)
	env.idp.FailNext(500, 500, 500, 500, 500, 500, 500, 500, 500, 500)
	r = pySend(t, addr, localUser, localPass, bob, simpleMessage(marker+"-500"), 1)
	if r.OK || r.Code/100 != 4 {
		t.Fatalf("token endpoint 500: got %+v, want a 4xx", r)
	}
	t.Logf("endpoint 500: %d %s", r.Code, r.Msg)
	env.idp.ClearFaults()

	// The app retries later, as apps do after a 4xx; the same process
	// delivers once the endpoint answers (a failure is held for a few
	// seconds with backoff, so retries do not storm the endpoint).
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = pySend(t, addr, localUser, localPass, bob, simpleMessage(marker), 1)
		if r.OK {
			break
		}
		if r.Code/100 != 4 || time.Now().After(deadline) {
			t.Fatalf("retry after recovery: %+v", r)
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitForMessage(t, bob, marker)
	assertNotDelivered(t, bob, marker+"-500")
	if strings.Contains(p.logs.String(), msSecret) {
		t.Errorf("the client secret appears in mailproxy's log")
	}
}

// cutter forwards TCP to target and cuts both sides after limit bytes from
// the client: an upstream that dies in the middle of DATA.
func cutter(t *testing.T, target string, limit int64) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				u, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go io.Copy(c, u)
				io.CopyN(u, c, limit)
				c.Close()
				u.Close()
			}()
		}
	}()
	return l.Addr().String()
}

func TestUpstreamDyingMidDataGives4xxAndNothingIsDelivered(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	cut := cutter(t, fmt.Sprintf("127.0.0.1:%d", env.subPort), 256<<10)
	cfg := fmt.Sprintf(`profiles:
  sending:
    mailbox: %s
    smtp:
      listen: %s
      upstream:
        host: %s
        tls: starttls
        ca_file: %s
    local_users:
      - username: %s
        password: %q
    credentials:
%s`, bob, addr, cut, env.ca, localUser, localPass, genericCreds())
	startProxy(t, cfg, addr)
	marker := uniqueMarker(t)
	r := pySend(t, addr, localUser, localPass, bob, bigMessage(marker, 2<<20), 1)
	if r.OK || r.Code/100 != 4 {
		t.Fatalf("upstream cut mid-DATA: got %+v, want a 4xx", r)
	}
	t.Logf("cut: %d %s", r.Code, r.Msg)
	assertNotDelivered(t, bob, marker)
}

func TestBadInputGetsAnErrorAndOtherSessionsCarryOn(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)

	var wg sync.WaitGroup
	replies := make([]string, 3)
	junk := [][]byte{
		append([]byte("EHLO x\r\nMAIL FROM:<"), append(bytes.Repeat([]byte("a"), 1<<20), '>', '\r', '\n')...),
		{0x00, 0xff, 0xfe, 0x16, 0x03, 0x01, '\r', '\n', 'Q', 'U', 'I', 'T', '\r', '\n'},
		[]byte("HELLO?\r\nAUTH PLAIN !!!notbase64\r\nQUIT\r\n"),
	}
	for i, j := range junk {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				replies[i] = err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			go c.Write(j)
			b, _ := io.ReadAll(bufio.NewReader(c))
			replies[i] = string(b)
		})
	}
	// Meanwhile a well-behaved app sends.
	marker := uniqueMarker(t)
	r := pySend(t, addr, localUser, localPass, bob, simpleMessage(marker), 1)
	wg.Wait()
	if !r.OK {
		t.Fatalf("good session failed beside bad ones: %+v", r)
	}
	waitForMessage(t, bob, marker)
	if !strings.Contains(replies[0], "500") {
		t.Errorf("overlong line: want a 500 reply, got %q", trim(replies[0]))
	}
	for i, rep := range replies[1:] {
		if !strings.Contains(rep, "500") && !strings.Contains(rep, "501") && !strings.Contains(rep, "502") {
			t.Errorf("junk %d: want a 5xx reply, got %q", i+1, trim(rep))
		}
	}
}

func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func TestMessagesPerSessionLimitsUpstreamSessions(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	startProxy(t, "profiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), "        messages_per_session: 3\n"), addr)
	marker := uniqueMarker(t)
	before := env.idp.Introspections() // Dovecot validates the token once per upstream login
	msg := []byte(fmt.Sprintf("From: app@example.test\r\nTo: bob@example.test\r\nSubject: %s-@N@\r\n\r\nmessage @N@\r\n", marker))
	if r := pySend(t, addr, localUser, localPass, bob, msg, 7); !r.OK {
		t.Fatalf("send: %+v", r)
	}
	for i := 0; i < 7; i++ {
		waitForMessage(t, bob, fmt.Sprintf("%s-%d", marker, i))
	}
	if got := env.idp.Introspections() - before; got != 3 {
		t.Fatalf("7 messages with messages_per_session 3 used %d upstream logins, want 3", got)
	}
}

func TestSIGTERMFinishesTheMessageInFlight(t *testing.T) {
	need(t)
	addr := freeAddr(t)
	p := startProxy(t, "log: {level: debug}\nprofiles:\n"+oauthProfile("sending", addr, bob, genericCreds(), ""), addr)
	marker := uniqueMarker(t)
	msg := bigMessage(marker, 20<<20)
	res := make(chan sendResult, 1)
	go func() { res <- pySend(t, addr, localUser, localPass, bob, msg, 1) }()
	// The client's MAIL opened the upstream session; then DATA streams 20 MB.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.logs.String(), "upstream session opened"); {
		if time.Now().After(deadline) {
			t.Fatal("the client never reached MAIL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	r := <-res
	if !r.OK {
		t.Fatalf("message in flight at SIGTERM: %+v", r)
	}
	waitForMessage(t, bob, marker)
	<-p.done
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}
