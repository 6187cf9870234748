package e2e

// Replicas that share one token store on PostgreSQL: one sign-in serves
// them all, and a refresh token that rotates with reuse detection is
// redeemed by one of them at a time, never twice.

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
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
	"mailproxy/pgtest"
	"mailproxy/tokens"
)

// replicasApp is the provider's app the replicas' person signs in to: its
// access tokens live 5 s and a spent refresh token presented again revokes
// the grant (RFC 9700 §4.14.2).
const (
	replicasApp = "replicas-app"
	replicaTTL  = 5 * time.Second
)

type replica struct {
	p                *proxy
	smtp, imap, admn string
	ok, failed       atomic.Int64
	killed           atomic.Bool
}

// replicaYAML is one replica's configuration: the same profile and store,
// its own listeners.
func replicaYAML(r *replica, key string) string {
	creds := fmt.Sprintf("      type: oauth2\n      authorize_url: %s/authorize\n      token_url: %s/token\n      client_id: %s\n      scopes: [mail, offline_access]\n",
		env.idpURL, env.idpURL, replicasApp)
	return fmt.Sprintf("token_store:\n  postgres: ${env:MAILPROXY_E2E_STORE_DSN}\n  key: %s\n"+
		"admin: {listen: %s, username: ops, password: ops-pw}\nprofiles:\n"+
		"  shared:\n    mailbox: %s\n"+
		"    smtp:\n      listen: %s\n%s"+
		"    imap:\n      listen: %s\n      upstream: {host: \"localhost:%d\", tls: implicit, ca_file: %q}\n"+
		"    local_users:\n      - {name: app, username: %s, password: %q}\n    credentials:\n%s",
		key, r.admn, ivy, r.smtp, upstreamYAML("        messages_per_session: 1\n"), r.imap, imapsPort(), env.ca, localUser, localPass, creds)
}

// curlIMAPLogin logs in through addr and asks for INBOX's STATUS: the
// upstream login needs a token.
func curlIMAPLogin(addr string) error {
	out, err := exec.Command("curl", "-sS", "--max-time", "15", "--url", "imap://"+addr+"/", "--user", localUser+":"+localPass,
		"-X", "STATUS INBOX (MESSAGES)").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "MESSAGES") {
		return fmt.Errorf("curl imap: %v: %s", err, out)
	}
	return nil
}

// curlSend sends the message in file through the SMTP listener at addr.
func curlSend(addr, file string) error {
	out, err := exec.Command("curl", "-sS", "--max-time", "30", "--url", "smtp://"+addr, "--user", localUser+":"+localPass,
		"--mail-from", "app@example.test", "--mail-rcpt", ivy, "--upload-file", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("curl smtp: %v: %s", err, out)
	}
	return nil
}

// signInOnAdminPage signs user in for profile through the admin page at
// admin, as a person's browser does.
func signInOnAdminPage(t *testing.T, admin, profile, user string) {
	t.Helper()
	c := idpClient(t)
	c.Jar, _ = cookiejar.New(nil)
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), admin) {
			r.SetBasicAuth("ops", "ops-pw")
		}
		return nil
	}
	req, _ := http.NewRequest("POST", admin+"/profiles/"+profile+"/signin", nil)
	req.SetBasicAuth("ops", "ops-pw")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := submitSignIn(t, c, resp, user, personPassword(user))
	if !strings.Contains(body, "has a new grant") {
		t.Fatalf("after signing in, the browser shows %s:\n%s", resp.Request.URL, body)
	}
}

// pidOf names the process whose TCP socket has the local address addr.
func pidOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("ss", "-tnpH", "sport = :"+port).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	m := regexp.MustCompile(`pid=(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(string(m[1]))
	return pid
}

// Ten replicas on one PostgreSQL, one person's grant signed in once through
// one of them, access tokens living 5 s, real clients (curl) logging in and
// sending on every replica. Meanwhile one replica is killed in the middle
// of a refresh and PostgreSQL is restarted. The grant must never be
// revoked: no refresh token is redeemed twice.
func TestTenReplicasShareOneSignIn(t *testing.T) {
	need(t)
	run := 120 * time.Second
	if s := os.Getenv("MAILPROXY_E2E_REPLICAS_SECONDS"); s != "" {
		n, _ := strconv.Atoi(s)
		run = time.Duration(n) * time.Second
	}
	pg := pgtest.Start(t, 0)
	t.Setenv("MAILPROXY_E2E_STORE_DSN", pg.DSN)
	env.idp.AddPublicApp(idp.PublicApp{ClientID: replicasApp, TTL: replicaTTL, ReuseDetection: true,
		RedirectURIs: []string{"http://127.0.0.1/oauth/callback"}})
	reusesBefore, revokedBefore := env.idp.RefreshReuses(), env.idp.RevokedGrants()

	key := tokens.NewKey()
	replicas := make([]*replica, 10)
	var starting sync.WaitGroup
	var cfg0 string
	for i := range replicas {
		r := &replica{smtp: freeAddr(t), imap: freeAddr(t), admn: freeAddr(t)}
		replicas[i] = r
		cfg := writeConfig(t, replicaYAML(r, key))
		if i == 0 {
			cfg0 = cfg
		}
		starting.Go(func() { r.p = startProxyFile(t, cfg, r.smtp, r.imap, r.admn) })
	}
	starting.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if err := curlIMAPLogin(replicas[1].imap); err == nil {
		t.Fatal("a replica served the profile before anyone signed in")
	}

	// One sign-in, on replica 0's admin page; replica 1 serves within 2 s.
	signInOnAdminPage(t, "http://"+replicas[0].admn, "shared", ivy)
	signedIn := time.Now()
	before := make([]int, len(replicas)) // the logs up to the sign-in say "not signed in yet"
	for i, r := range replicas {
		before[i] = len(r.p.logs.String())
	}
	for curlIMAPLogin(replicas[1].imap) != nil {
		if time.Since(signedIn) > 2*time.Second {
			t.Fatalf("replica 1 does not serve the profile %s after the sign-in on replica 0", time.Since(signedIn).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("replica 1 served %s after the sign-in on replica 0", time.Since(signedIn).Round(time.Millisecond))
	// The CLI reads the same store: the account signed in, its last refresh.
	if out, err := exec.Command(env.bin, "token", "list", "-config", cfg0).CombinedOutput(); err != nil || !strings.Contains(string(out), ivy) ||
		strings.Contains(string(out), "not signed in") || strings.Contains(string(out), pg.Password) {
		t.Fatalf("token list on the shared store: %v\n%s", err, out)
	}
	redemptionsBefore := env.idp.Redemptions(replicasApp)

	// The load: on every replica, an IMAP login and a message in a loop.
	stop := make(chan struct{})
	var load sync.WaitGroup
	var sentMu sync.Mutex
	var sent []string
	dir := t.TempDir()
	for i, r := range replicas {
		loop := func(op func(n int) error) {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
				}
				if r.killed.Load() {
					return
				}
				if err := op(n); err != nil {
					if !r.killed.Load() {
						r.failed.Add(1)
						t.Logf("replica %d: %v", i, err)
					}
					continue
				}
				r.ok.Add(1)
			}
		}
		load.Go(func() { loop(func(int) error { return curlIMAPLogin(r.imap) }) })
		load.Go(func() {
			loop(func(n int) error {
				marker := fmt.Sprintf("replica-%d-%d-%d", i, n, time.Now().UnixNano())
				f := filepath.Join(dir, marker+".eml")
				os.WriteFile(f, messageWith(marker), 0o600)
				if err := curlSend(r.smtp, f); err != nil {
					return err
				}
				sentMu.Lock()
				sent = append(sent, marker)
				sentMu.Unlock()
				return nil
			})
		})
	}

	// A replica killed in the middle of a refresh: the token endpoint holds
	// requests for 4 s, and the replica whose request is held dies.
	time.Sleep(run / 6)
	env.idp.SetClientFault(replicasApp, idp.ClientFault{Delay: 4 * time.Second})
	var victim int = -1
	for deadline := time.Now().Add(20 * time.Second); victim < 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, addr := range env.idp.Held(replicasApp) {
			pid := pidOf(t, addr)
			for i, r := range replicas {
				if r.p.cmd.Process.Pid == pid {
					victim = i
				}
			}
		}
	}
	if victim < 0 {
		t.Fatal("no replica was seen in the middle of a refresh within 20 s")
	}
	replicas[victim].killed.Store(true)
	replicas[victim].p.cmd.Process.Signal(syscall.SIGKILL)
	<-replicas[victim].p.done
	env.idp.SetClientFault(replicasApp, idp.ClientFault{})
	t.Logf("replica %d killed with SIGKILL while its token request was held", victim)

	// PostgreSQL restarted once.
	time.Sleep(run / 3)
	pg.Restart(t)
	t.Log("PostgreSQL restarted")

	time.Sleep(run - run/6 - run/3)
	close(stop)
	load.Wait()

	// After recovery every replica left serves IMAP and SMTP.
	final := filepath.Join(dir, "final.eml")
	for i, r := range replicas {
		if r.killed.Load() {
			continue
		}
		marker := fmt.Sprintf("replica-final-%d-%d", i, time.Now().UnixNano())
		os.WriteFile(final, messageWith(marker), 0o600)
		var err error
		for try := 0; try < 20; try++ {
			if err = curlIMAPLogin(r.imap); err == nil {
				if err = curlSend(r.smtp, final); err == nil {
					break
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("replica %d does not serve after recovery: %v", i, err)
			continue
		}
		sent = append(sent, marker)
	}

	// Nothing redeemed twice: no reuse, no revoked grant, no invalid_grant.
	redemptions := env.idp.Redemptions(replicasApp) - redemptionsBefore
	if n := env.idp.RefreshReuses() - reusesBefore; n != 0 {
		t.Errorf("%d spent refresh tokens were presented again", n)
	}
	if env.idp.RevokedGrants() != revokedBefore {
		t.Error("the provider revoked the grant: a person would have to sign in again")
	}
	var ok, failed int64
	for i, r := range replicas {
		logs := r.p.logs.String()
		for _, bad := range []string{"invalid_grant", "needs_sign_in"} {
			if strings.Contains(logs[before[i]:], bad) {
				t.Errorf("replica %d's log has %q after the sign-in", i, bad)
			}
		}
		if strings.Contains(logs, pg.Password) {
			t.Errorf("replica %d's log has the database password", i)
		}
		ok, failed = ok+r.ok.Load(), failed+r.failed.Load()
	}
	// Every message a client was told 250 for is in the mailbox.
	have := map[string]bool{}
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(env.maildirOf(ivy), sub))
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(env.maildirOf(ivy), sub, e.Name()))
			if m := regexp.MustCompile(`replica-[-\w]+`).Find(b); m != nil {
				have[string(m)] = true
			}
		}
	}
	deadline := time.Now().Add(deliveryWait)
	for _, m := range sent {
		for !have[m] && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			if findMessage(ivy, m) != nil {
				have[m] = true
			}
		}
		if !have[m] {
			t.Errorf("message %s was accepted (250) but not delivered", m)
		}
	}
	// A removal through one replica's CLI ends the profile on another
	// within 2 s: its apps are told to have someone sign in.
	if out, err := exec.Command(env.bin, "token", "remove", "-config", cfg0, "shared").CombinedOutput(); err != nil {
		t.Fatalf("token remove: %v\n%s", err, out)
	}
	removed := time.Now()
	for curlIMAPLogin(replicas[1].imap) == nil {
		if time.Since(removed) > 2*time.Second {
			t.Fatal("replica 1 still serves the profile 2 s after token remove on replica 0's store")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("replica 1 stopped serving %s after token remove", time.Since(removed).Round(time.Millisecond))

	// Sharing: about one redemption per three quarters of a token's life
	// for all ten replicas, where ten stores would each make as many.
	lifetimes := float64(run) / float64(replicaTTL)
	t.Logf("%v with 10 replicas (1 killed), 5 s tokens: %d redemptions (= rotations; %.1f token lifetimes), 0 reuses; client operations %d ok, %d failed (temporary), %d messages delivered",
		run, redemptions, lifetimes, ok, failed, len(sent))
	if float64(redemptions) > 3*lifetimes {
		t.Errorf("%d redemptions in %.0f token lifetimes: the replicas do not share their access tokens", redemptions, lifetimes)
	}
}
