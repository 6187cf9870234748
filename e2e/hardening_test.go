package e2e

// Faults from the hostile trial, against the real servers: a full disk
// under a rotating refresh token, two processes redeeming one grant,
// SIGHUP under load, a connection flood at a low descriptor limit, clients
// that never log in, an upstream that stalls after 354, a token endpoint
// that is down or hangs, a restart while the old process drains.

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mailproxy/idp"
	"mailproxy/tokens"
)

// rotatingProfile reads mailbox over IMAP with a delegated grant seeded by
// a refresh token the fake IdP rotates on every redemption.
func rotatingProfile(t *testing.T, name, imapAddr, mailbox, storeDir string) (yaml, clientID string) {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	clientID = fmt.Sprintf("rotating-%x", b)
	seed := fmt.Sprintf("rt-seed-%x", b)
	env.idp.AddClient(idp.Client{ID: clientID})
	env.idp.AddRefreshToken(seed, mailbox)
	yaml = fmt.Sprintf(`token_store:
  path: %s/tokens.enc
  key: %q
profiles:
  %s:
    mailbox: %s
    imap:
      listen: %s
      upstream: {host: "localhost:%d", tls: implicit, ca_file: %q}
    local_users:
      - {name: app, username: %s, password: %q}
    credentials:
      type: oauth2
      token_url: %s/token
      client_id: %s
      refresh_token: %s
`, storeDir, tokens.NewKey(), name, mailbox, imapAddr, imapsPort(), env.ca, localUser, localPass, env.idpURL, clientID, seed)
	return yaml, clientID
}

// imapLoginOK logs in through mailproxy and logs out, or fails the test.
func imapLoginOK(t *testing.T, addr, what string) {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(imapLogin(localUser, localPass))
	if got := c.until("a1 "); !strings.HasPrefix(got, "a1 OK") {
		t.Fatalf("%s: %q", what, got)
	}
	c.send("a2 LOGOUT\r\n")
	c.until("a2 ")
	c.c.Close()
}

// imapLoginReply is the tagged reply to a login through mailproxy.
func imapLoginReply(t *testing.T, addr string) string {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.c.Close()
	c.send(imapLogin(localUser, localPass))
	return c.until("a1 ")
}

func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir, err := os.MkdirTemp(env.work, "tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes into dir until its file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

func count(s, sub string) int { return strings.Count(s, sub) }

// mailproxyCmd is a one-off mailproxy command that trusts the fake IdP.
func mailproxyCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(env.bin, args...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+env.idpCA)
	return cmd
}

// The store on a full disk while the provider rotates the refresh token at
// every redemption: the rotated token is kept, used, said to be unsaved
// (log, metric, /readyz), saved once there is room, and a restart after
// that needs no sign-in.
func TestFullDiskNeverLosesARotatedRefreshToken(t *testing.T) {
	need(t)
	t.Parallel() // its own client or mailbox at the IdP
	dir := mountTmpfs(t, "256k")
	imapAddr, adminAddr := freeAddr(t), freeAddr(t)
	yaml, _ := rotatingProfile(t, "reading", imapAddr, erin, dir)
	yaml = "log: {level: info}\nadmin: {listen: " + adminAddr + ", token: admin-bearer}\n" + yaml
	cfg := writeConfig(t, yaml)
	reusesBefore := env.idp.RefreshReuses()
	p := startProxyFile(t, cfg, imapAddr, adminAddr)
	imapLoginOK(t, imapAddr, "first login (redeems the seed)")

	filler := fill(t, dir)
	for i := range 3 {
		env.idp.ExpireAccess(erin) // the next login must redeem the refresh token
		imapLoginOK(t, imapAddr, fmt.Sprintf("login %d on a full disk", i))
	}
	if n := count(p.logs.String(), "event=store_not_durable"); n != 1 {
		t.Fatalf("%d store_not_durable log events on a full disk, want 1:\n%s", n, p.logs.String())
	}
	if code, body := get(t, "http://"+adminAddr+"/readyz", ""); code != 503 || !strings.Contains(body, "cannot be written") || !strings.Contains(body, "no space left on device") {
		t.Fatalf("/readyz on a full disk: %d %s", code, body)
	}
	if _, body := get(t, "http://"+adminAddr+"/metrics", "admin-bearer"); !regexp.MustCompile(`mailproxy_token_store_unsaved_changes [1-9]`).MatchString(body) {
		t.Fatalf("/metrics does not count the unsaved changes:\n%s", grepLines(body, "unsaved"))
	}

	os.Remove(filler)
	eventually(t, "the kept changes are saved once there is room", func() bool {
		code, _ := get(t, "http://"+adminAddr+"/readyz", "")
		return code == 200 && strings.Contains(p.logs.String(), "event=store_durable")
	})
	if _, body := get(t, "http://"+adminAddr+"/metrics", "admin-bearer"); !strings.Contains(body, "mailproxy_token_store_unsaved_changes 0") {
		t.Fatalf("/metrics after the save:\n%s", grepLines(body, "unsaved"))
	}
	p.stop()

	// A restart reads the newest refresh token: no person signs in again.
	p2 := startProxyFile(t, cfg, imapAddr, adminAddr)
	env.idp.ExpireAccess(erin)
	imapLoginOK(t, imapAddr, "login after a restart")
	for _, logs := range []string{p.logs.String(), p2.logs.String()} {
		if strings.Contains(logs, "needs_sign_in") || strings.Contains(logs, "invalid_grant") {
			t.Fatalf("the grant was lost:\n%s", logs)
		}
	}
	if n := env.idp.RefreshReuses() - reusesBefore; n != 0 {
		t.Fatalf("%d redemptions of a spent refresh token", n)
	}
}

// mailproxy check run while serve runs redeems the same rotating grant in
// turn with it, never both at once: no refresh token is spent twice.
func TestServeAndCheckRedeemOneRotatingGrantInTurn(t *testing.T) {
	need(t)
	t.Parallel() // its own client or mailbox at the IdP
	dir := t.TempDir()
	imapAddr := freeAddr(t)
	yaml, clientID := rotatingProfile(t, "reading", imapAddr, dave, dir)
	cfg := writeConfig(t, yaml)
	// Slow redemptions, so two that start together overlap.
	env.idp.SetClientFault(clientID, idp.ClientFault{Delay: 300 * time.Millisecond})
	defer env.idp.SetClientFault(clientID, idp.ClientFault{})
	reusesBefore := env.idp.RefreshReuses()
	p := startProxyFile(t, cfg, imapAddr)
	imapLoginOK(t, imapAddr, "first login")
	for round := range 4 {
		env.idp.ExpireAccess(dave)
		var wg sync.WaitGroup
		var checkOut []byte
		var checkErr error
		wg.Go(func() {
			checkOut, checkErr = mailproxyCmd("check", "-config", cfg, "reading").CombinedOutput()
		})
		wg.Go(func() { imapLoginOK(t, imapAddr, fmt.Sprintf("round %d: serve's login", round)) })
		wg.Wait()
		if checkErr != nil {
			t.Fatalf("round %d: check: %v\n%s\nserve:\n%s", round, checkErr, checkOut, p.logs.String())
		}
	}
	if n := env.idp.RefreshReuses() - reusesBefore; n != 0 {
		t.Fatalf("%d redemptions of a spent refresh token by serve and check", n)
	}
	if strings.Contains(p.logs.String(), "invalid_grant") {
		t.Fatalf("serve lost the grant:\n%s", p.logs.String())
	}
}

// SIGHUP (logrotate, systemctl reload) reloads the configuration: it
// neither stops mailproxy nor disturbs the mail moving through it.
func TestSIGHUPUnderLoadReloadsWithoutDisturbingMail(t *testing.T) {
	need(t)
	smtpAddr, imapAddr := freeAddr(t), freeAddr(t)
	p := startProxy(t, "profiles:\n"+oauthProfile("sending", smtpAddr, bob, genericCreds(), "")+
		receivingProfile("reading", imapAddr, "", carol, clientFor(carol)), smtpAddr, imapAddr)
	marker := uniqueMarker(t)
	res := make(chan sendResult, 1)
	go func() {
		res <- pySend(t, smtpAddr, localUser, localPass, bob, bigMessage(marker+"-@N@", 100<<10), 20)
	}()
	idle := dialRaw(t, imapAddr)
	idle.send(imapLogin(localUser, localPass))
	idle.until("a1 OK")
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	if r := <-res; !r.OK {
		t.Fatalf("20 messages sent during 5 SIGHUPs: %+v", r)
	}
	for i := range 20 {
		waitForMessage(t, bob, fmt.Sprintf("%s-%d", marker, i))
	}
	select {
	case <-p.done:
		t.Fatalf("mailproxy exited on SIGHUP:\n%s", p.logs.String())
	default:
	}
	idle.send("a2 NOOP\r\n")
	idle.until("a2 OK")
	if n, r := count(p.logs.String(), "event=sighup"), count(p.logs.String(), "event=reloaded"); n != 5 || r < 1 || r > 5 {
		t.Fatalf("%d sighup and %d reloaded log lines for 5 SIGHUPs", n, r)
	}
}

// holdConnections opens n connections to addr and reads each greeting; it
// returns the greetings by kind.
func holdConnections(t *testing.T, addr string, n int) (greetings map[string]int, conns []net.Conn) {
	t.Helper()
	greetings = map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				mu.Lock()
				greetings["dial failed"]++
				mu.Unlock()
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			l, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				l = "no greeting"
			}
			mu.Lock()
			greetings[strings.TrimSpace(l)]++
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return greetings, conns
}

// A flood of idle connections to one listener at a low descriptor limit:
// the flood is told "too many connections" past the listener's share, and
// normal clients of the other protocols go on working.
func TestConnectionFloodAtALowFDLimitSparesTheOtherListeners(t *testing.T) {
	need(t)
	smtpAddr, imapAddr, pop3Addr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+oauthProfile("sending", smtpAddr, bob, genericCreds(), "")+
		receivingProfile("reading", imapAddr, pop3Addr, frank, clientFor(frank)))
	p := startProxyUnder(t, []string{"prlimit", "--nofile=256:256", "--"}, cfg, smtpAddr, imapAddr, pop3Addr)
	// (256 - 64 reserved - 4 a listener) / 2 per session / 3 listeners.
	const share = (256 - 64 - 12) / 2 / 3
	host, pop3PortS, _ := net.SplitHostPort(pop3Addr)
	imapWorks := func(what string) {
		t.Helper()
		readsThrough(t, frank, imapAddr)
		if r := runPy(t, "pop3client.py", host, pop3PortS, localUser, localPass, "user", t.TempDir()); r["ok"] != true {
			t.Fatalf("%s: poplib: %v", what, r)
		}
	}

	greetings, conns := holdConnections(t, smtpAddr, 300)
	full := fmt.Sprintf("421 4.7.0 mailproxy: too many connections (%d) to this listener: try again later", share)
	if greetings["220 mailproxy ESMTP Service Ready"] != share || greetings[full] != 300-share {
		t.Fatalf("300 SMTP connections, share %d, got %v", share, greetings)
	}
	imapWorks("during an SMTP flood")
	for _, c := range conns {
		c.Close()
	}
	eventually(t, "SMTP takes mail again after the flood", func() bool {
		return pySend(t, smtpAddr, localUser, localPass, bob, simpleMessage(uniqueMarker(t)), 1).OK
	})

	greetings, _ = holdConnections(t, imapAddr, 300)
	if greetings[fmt.Sprintf("* BYE [UNAVAILABLE] mailproxy: too many connections (%d) to this listener: try again later", share)] != 300-share {
		t.Fatalf("300 IMAP connections, share %d, got %v", share, greetings)
	}
	if r := pySend(t, smtpAddr, localUser, localPass, bob, simpleMessage(uniqueMarker(t)), 1); !r.OK {
		t.Fatalf("SMTP during an IMAP flood: %+v", r)
	}
	if r := runPy(t, "pop3client.py", host, pop3PortS, localUser, localPass, "user", t.TempDir()); r["ok"] != true {
		t.Fatalf("POP3 during an IMAP flood: %v", r)
	}
	if !strings.Contains(p.logs.String(), `level=WARN msg="connection refused" proto=smtp`) {
		t.Fatalf("refused connections are not logged:\n%s", p.logs.String())
	}
	if strings.Contains(p.logs.String(), "too many open files") {
		t.Fatalf("mailproxy ran out of descriptors:\n%s", grepLines(p.logs.String(), "too many open files"))
	}
}

// A client that never logs in, trickling commands, is closed at the login
// deadline counted from its connection's start, and gets the last line.
func TestTrickledCommandsAreClosedAtTheLoginDeadline(t *testing.T) {
	need(t)
	smtpAddr, imapAddr, pop3Addr := freeAddr(t), freeAddr(t), freeAddr(t)
	startProxy(t, "limits: {login_timeout: 2s}\nprofiles:\n"+oauthProfile("sending", smtpAddr, bob, genericCreds(), "")+
		receivingProfile("reading", imapAddr, pop3Addr, carol, clientFor(carol)), smtpAddr, imapAddr, pop3Addr)
	for _, tc := range []struct{ name, addr, cmd, last string }{
		{"IMAP", imapAddr, "n NOOP\r\n", "* BYE Autologout: no login within 2s"},
		{"POP3", pop3Addr, "CAPA\r\n", "-ERR Autologout: no login within 2s"},
		{"SMTP", smtpAddr, "NOOP\r\n", "421 4.4.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			go func() {
				for time.Since(start) < 10*time.Second {
					if _, err := io.WriteString(c, tc.cmd); err != nil {
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
			c.SetReadDeadline(start.Add(15 * time.Second))
			r := bufio.NewReader(c)
			var last string
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					break
				}
				last = strings.TrimSpace(l)
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Fatalf("a client that never logged in stayed %v with login_timeout 2s", took)
			}
			if !strings.HasPrefix(last, tc.last) {
				t.Fatalf("last line %q, want %q", last, tc.last)
			}
		})
	}
}

// staller forwards TCP to target until the server says 354; from then on
// it reads nothing more from the client (the first connection only).
func staller(t *testing.T, target string) (addr string, stalled *atomic.Bool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	stalled = &atomic.Bool{}
	var first atomic.Bool
	first.Store(true)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			stall := first.Swap(false)
			var seen354 atomic.Bool
			go func() { // server to client, watching for 354
				r := bufio.NewReader(s)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						c.Close()
						return
					}
					if stall && strings.HasPrefix(l, "354") {
						seen354.Store(true)
						stalled.Store(true)
					}
					c.Write([]byte(l))
				}
			}()
			go func() { // client to server, until 354
				defer s.Close()
				buf := make([]byte, 4096)
				for {
					if seen354.Load() {
						<-done
						return
					}
					c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					n, err := c.Read(buf)
					if n > 0 {
						s.Write(buf[:n])
					}
					if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), stalled
}

// An upstream that stops reading after 354 becomes a 451 in bounded time,
// nothing is delivered, and the next message goes on a new session.
func TestStalledUpstreamAfter354IsA451InBoundedTime(t *testing.T) {
	need(t)
	t.Parallel() // its own client or mailbox at the IdP
	addr := freeAddr(t)
	stallAddr, stalled := staller(t, fmt.Sprintf("127.0.0.1:%d", portBase+25))
	p := startProxy(t, fmt.Sprintf(`profiles:
  sending:
    mailbox: %s
    smtp:
      listen: %s
      max_message_bytes: 104857600
      upstream: {host: %q, tls: none, timeout: 2s}
    local_users: [{name: crm, username: %s, password: %q}]
    credentials:
%s`, bob, addr, stallAddr, localUser, localPass, genericCreds()), addr)
	marker := uniqueMarker(t)
	start := time.Now()
	r := pySend(t, addr, localUser, localPass, bob, bigMessage(marker, 20<<20), 1)
	took := time.Since(start)
	if !stalled.Load() {
		t.Fatal("the upstream never said 354")
	}
	if r.OK || r.Code != 451 {
		t.Fatalf("a message to an upstream that stopped reading: %+v", r)
	}
	if took > 30*time.Second {
		t.Fatalf("the app waited %v for the 451 with upstream timeout 2s", took)
	}
	t.Logf("451 after %v: %s", took.Round(time.Millisecond), r.Msg)
	next := uniqueMarker(t)
	if r := pySend(t, addr, localUser, localPass, bob, simpleMessage(next), 1); !r.OK {
		t.Fatalf("the next message: %+v\n%s", r, p.logs.String())
	}
	waitForMessage(t, bob, next)
	assertNotDelivered(t, bob, marker)
}

// A token endpoint down for 60 s is asked a handful of times, not once per
// login; logins are told it is temporary at once; once it is back, logins
// work again without a restart. A token endpoint that hangs holds a login
// at most 10 s, and does not hold up a shutdown.
func TestTokenEndpointDown60sIsNotStormed(t *testing.T) {
	need(t)
	t.Parallel() // its own client at the IdP: other tests are not affected
	clientID := "outage-app-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: clientID, Secret: "outage-secret", Mailbox: ivy})
	env.idp.SetClientFault(clientID, idp.ClientFault{Down: true})
	defer env.idp.SetClientFault(clientID, idp.ClientFault{})
	imapAddr := freeAddr(t)
	creds := fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: outage-secret\n", env.idpURL, tenant, clientID)
	p := startProxy(t, "profiles:\n"+receivingProfile("reading", imapAddr, "", ivy, creds), imapAddr)

	// Ten logins a second for 60 s, on five connections that retry.
	var logins, temporary atomic.Int64
	stop := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			c, err := net.Dial("tcp", imapAddr)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(stop.Add(30 * time.Second))
			r := bufio.NewReader(c)
			r.ReadString('\n')
			for i := 0; time.Now().Before(stop); i++ {
				tag := fmt.Sprintf("t%d", i)
				io.WriteString(c, strings.Replace(imapLogin(localUser, localPass), "a1", tag, 1))
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(l, tag+" ") {
						logins.Add(1)
						if strings.HasPrefix(l, tag+" NO [UNAVAILABLE]") {
							temporary.Add(1)
						}
						break
					}
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	requests := env.idp.TokenRequestsFor(clientID)
	t.Logf("60 s down: %d logins, %d told it is temporary, %d token requests", logins.Load(), temporary.Load(), requests)
	if temporary.Load() != logins.Load() || logins.Load() < 400 {
		t.Fatalf("%d of %d logins told it is temporary", temporary.Load(), logins.Load())
	}
	if requests > 12 {
		t.Fatalf("%d token requests in 60 s of outage, want at most 12", requests)
	}

	env.idp.SetClientFault(clientID, idp.ClientFault{})
	eventually(t, "logins work once the token endpoint is back", func() bool {
		return strings.HasPrefix(imapLoginReply(t, imapAddr), "a1 OK")
	})

	// The endpoint hangs: a login that needs a token waits at most 10 s.
	env.idp.SetClientFault(clientID, idp.ClientFault{Delay: 2 * time.Minute})
	env.idp.ExpireAccess(ivy)
	start := time.Now()
	got := imapLoginReply(t, imapAddr)
	if took := time.Since(start); took > 14*time.Second || !strings.Contains(got, "has not answered within 10s") {
		t.Fatalf("login with a hanging token endpoint, after %v: %q", took, got)
	}
	// And a shutdown does not wait for the request that hangs.
	start = time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("serve took %v to stop while a token request hung", took)
	}
}

// The next process starts while the old one drains: every listener, the
// admin one too, is free as soon as draining starts.
func TestRestartWhileTheOldProcessDrains(t *testing.T) {
	need(t)
	smtpAddr, adminAddr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, "admin: {listen: "+adminAddr+", token: admin-bearer}\nprofiles:\n"+
		oauthProfile("sending", smtpAddr, bob, genericCreds(), ""))
	old := startProxyFile(t, cfg, smtpAddr, adminAddr)

	// A message in flight on the old process: half its body sent.
	c := dialRaw(t, smtpAddr) // reads the greeting
	marker := uniqueMarker(t)
	c.send("EHLO app\r\n")
	c.until("250 ")
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+localUser+"\x00"+localPass)) + "\r\n")
	if l := c.line(); !strings.HasPrefix(l, "235") {
		t.Fatalf("AUTH: %q", l)
	}
	c.send("MAIL FROM:<app@example.test>\r\nRCPT TO:<" + bob + ">\r\nDATA\r\n")
	c.until("354")
	c.send("Subject: " + marker + "\r\n\r\nfirst half\r\n")

	old.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, "the old process starts draining", func() bool { return strings.Contains(old.logs.String(), "shutting down") })
	next := startProxyFile(t, cfg, smtpAddr, adminAddr)
	select {
	case <-old.done:
		t.Fatal("the old process ended before the next one started: nothing was draining")
	default:
	}
	if code, _ := get(t, "http://"+adminAddr+"/healthz", ""); code != 200 {
		t.Fatalf("the next process's admin listener: %d", code)
	}
	m2 := uniqueMarker(t)
	if r := pySend(t, smtpAddr, localUser, localPass, bob, simpleMessage(m2), 1); !r.OK {
		t.Fatalf("a message to the next process: %+v\n%s", r, next.logs.String())
	}
	// The old process finishes its message.
	c.send("second half\r\n.\r\n")
	if l := c.until("2"); !strings.HasPrefix(l, "250") {
		t.Fatalf("the message in flight at the old process: %q", l)
	}
	waitForMessage(t, bob, marker)
	waitForMessage(t, bob, m2)
	c.send("QUIT\r\n")
	select {
	case <-old.done:
	case <-time.After(25 * time.Second):
		t.Fatal("the old process did not end after its last message")
	}
}

// config validate reports what serve would refuse before it binds a port.
func TestConfigValidateReportsWhatServeWouldRefuse(t *testing.T) {
	need(t)
	bad := filepath.Join(t.TempDir(), "not-a-cert.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"), 0o600)
	for _, tc := range []struct{ name, yaml, want string }{
		{"malformed store key", "token_store: {path: " + t.TempDir() + "/tokens.enc, key: not-a-key}\n", "token_store.key: must be 32 random bytes, base64 encoded"},
		{"store directory missing", "token_store: {path: /nonexistent/mailproxy/tokens.enc, key: " + tokens.NewKey() + "}\n", "token_store.path: directory /nonexistent/mailproxy does not exist"},
		{"a listener certificate that does not parse", "", "tls: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := tc.yaml + "profiles:\n" + oauthProfile("sending", freeAddr(t), bob, genericCreds(), "")
			if tc.name == "a listener certificate that does not parse" {
				y = strings.Replace(y, "      max_message_bytes:", fmt.Sprintf("      tls: {mode: starttls, cert_file: %s, key_file: %s}\n      max_message_bytes:", bad, bad), 1)
			}
			out, err := mailproxyCmd("config", "validate", "-config", writeConfig(t, y)).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("config validate: %v\n%s\nwant %q", err, out, tc.want)
			}
		})
	}
}

// token remove in another process ends the account's cached token in a
// running serve at once; the apps are told a person must sign in.
func TestTokenRemoveEndsTheCachedTokenOfARunningServe(t *testing.T) {
	need(t)
	imapAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("token_store: {path: %s/tokens.enc, key: %q}\nprofiles:\n", t.TempDir(), tokens.NewKey())+
		delegatedProfile("delegated", ivy, "", imapAddr))
	tokenAdd(t, cfg, "delegated", ivy)
	startProxyFile(t, cfg, imapAddr)
	imapLoginOK(t, imapAddr, "login with the grant")
	if out, err := mailproxyCmd("token", "remove", "-config", cfg, "delegated").CombinedOutput(); err != nil {
		t.Fatalf("token remove: %v\n%s", err, out)
	}
	start := time.Now()
	eventually(t, "the removed grant stops working", func() bool {
		return !strings.HasPrefix(imapLoginReply(t, imapAddr), "a1 OK")
	})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the removed account's token worked for %v more", took)
	}
	got := imapLoginReply(t, imapAddr)
	if !strings.Contains(got, "NO [UNAVAILABLE]") || !strings.Contains(got, ivy+" is not signed in yet") || !strings.Contains(got, "mailproxy token add delegated") {
		t.Fatalf("login after token remove: %q", got)
	}
}

// token add makes a missing store directory (mode 0700) before anyone
// signs in, and says so before the sign-in when it cannot write there.
func TestTokenAddChecksTheStoreBeforeTheSignIn(t *testing.T) {
	need(t)
	base := t.TempDir()
	for _, tc := range []struct{ name, dir, want string }{
		{"missing directory", filepath.Join(base, "new", "store"), "Open this address in a browser"},
		{"unusable directory", filepath.Join(base, "a-file", "store"), "token_store.path:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(filepath.Join(base, "a-file"), nil, 0o600)
			cfg := writeConfig(t, fmt.Sprintf("token_store: {path: %s/tokens.enc, key: %q}\nprofiles:\n", tc.dir, tokens.NewKey())+
				delegatedProfile("delegated", gina, "", freeAddr(t)))
			cmd := mailproxyCmd("token", "add", "-paste", "-config", cfg, "delegated")
			cmd.Stdin = strings.NewReader("") // nobody pastes
			out, _ := cmd.CombinedOutput()
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("token add: %s\nwant %q", out, tc.want)
			}
			if tc.name == "missing directory" {
				fi, err := os.Stat(tc.dir)
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Fatalf("store directory: %v %v", fi, err)
				}
			} else if strings.Contains(string(out), "Open this address") {
				t.Fatalf("the sign-in started although the store cannot be written:\n%s", out)
			}
		})
	}
}
