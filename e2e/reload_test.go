package e2e

// Reloading the configuration (SIGHUP, POST /reload) while mail moves.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailproxy/idp"
)

// reloadClient registers an IdP client of the test's own for mailbox.
func reloadClient(id, mailbox string) string {
	env.idp.AddClient(idp.Client{ID: id, Secret: id + "-secret", Mailbox: mailbox})
	return fmt.Sprintf("      type: oauth2\n      token_url: %s/token\n      client_id: %s\n      client_secret: %s\n", env.idpURL, id, id+"-secret")
}

// sendTo sends msg through the SMTP listener at addr to rcpt.
func sendTo(addr, user, pass, rcpt string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		return err
	}
	if err := c.SendMail("app@example.test", []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// writeAtomically replaces path's content in one rename, so that a reload
// never reads half a file.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Eight apps sending in a loop and four IMAP clients in IDLE while the
// file changes twenty times (some changes invalid, one adding a listener,
// one removing a profile): no message lost or refused, no session
// dropped, new sessions on the new settings, no token request storm.
func TestReloadUnderLoad(t *testing.T) {
	need(t)
	smtpAddr, imapAddr, extraAddr, lateAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	send := reloadClient("reload-sender", bob)
	read := reloadClient("reload-reader", carol)
	type variant struct {
		level       string
		perSession  int
		secondUser  bool // a second local user on the reading profile
		late, extra bool // profile "late" (a new listener), profile "extra"
		broken      string
	}
	render := func(v variant) string {
		if v.broken != "" {
			return v.broken
		}
		y := fmt.Sprintf("log: {level: %s}\nadmin: {listen: %s, username: ops, password: ops-pw}\nprofiles:\n", v.level, adminAddr)
		y += oauthProfile("sending", smtpAddr, bob, send, fmt.Sprintf("        messages_per_session: %d\n", v.perSession))
		reading := receivingProfile("reading", imapAddr, "", carol, read)
		if v.secondUser {
			reading = strings.Replace(reading, "    credentials:\n", "      - {name: second, username: second, password: second-pw}\n    credentials:\n", 1)
		}
		y += reading
		if v.extra {
			y += oauthProfile("extra", extraAddr, alice, reloadClient("reload-extra", alice), "")
		}
		if v.late {
			y += oauthProfile("late", lateAddr, dave, reloadClient("reload-late", dave), "")
		}
		return y
	}
	cfg := filepath.Join(t.TempDir(), "mailproxy.yaml")
	writeAtomically(t, cfg, render(variant{level: "info", perSession: 3, extra: true}))
	p := startProxyFile(t, cfg, smtpAddr, imapAddr, extraAddr, adminAddr)

	// The load.
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var markers sync.Map
	var senders sync.WaitGroup
	for s := range 8 {
		senders.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				marker := fmt.Sprintf("reload-%d-%d-%d", s, i, time.Now().UnixNano())
				if err := sendTo(smtpAddr, localUser, localPass, bob, messageWith(marker)); err != nil {
					failed.Add(1)
					t.Errorf("sender %d message %d: %v", s, i, err)
					return
				}
				sent.Add(1)
				markers.Store(marker, true)
			}
		})
	}
	var idlers []*rawIMAP
	for range 4 {
		c := dialRaw(t, imapAddr)
		c.send(imapLogin(localUser, localPass))
		c.until("a1 OK")
		c.send("a2 SELECT INBOX\r\na3 IDLE\r\n")
		c.until("+ ")
		idlers = append(idlers, c)
	}
	tokensBefore := env.idp.TokenRequestsFor("reload-sender")

	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
		req.SetBasicAuth("ops", "ops-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Reloads counted by the metric (the log level changes with them).
	outcomes := func() int {
		_, m := get("/metrics")
		n := 0
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "mailproxy_config_reloads_total{") {
				f := strings.Fields(l)
				v, _ := strconv.Atoi(f[len(f)-1])
				n += v
			}
		}
		return n
	}
	reload := func(v variant) {
		t.Helper()
		writeAtomically(t, cfg, render(v))
		before := outcomes()
		// Apart enough for messages and logins to run across each.
		time.Sleep(150 * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(20 * time.Second)
		for outcomes() == before {
			if time.Now().After(deadline) {
				p.cmd.Process.Signal(syscall.SIGQUIT)
				time.Sleep(time.Second)
				t.Fatalf("no reload outcome logged:\n%s", p.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	good := variant{level: "info", perSession: 3, extra: true}
	for i := range 20 {
		v := good
		switch i {
		case 2, 9, 15:
			v.broken = []string{"profiles: [\n", "profiles:\n  x:\n    mailbox: a@b\n    smtp: {listen: 127.0.0.1:1}\n    colour: blue\n", render(good) + "  sending:\n    mailbox: dup@example.test\n"}[i%3]
			reload(v)
			if st, body := get("/readyz"); st != http.StatusServiceUnavailable || !strings.Contains(body, "the last reload was refused") {
				t.Fatalf("/readyz after a refused reload: %d %s", st, body)
			}
			if _, m := get("/metrics"); !strings.Contains(m, "mailproxy_config_last_reload_failed 1") {
				t.Fatal("the metric does not say the last reload failed")
			}
			continue
		case 5:
			good.late = true // a new listener
		case 8:
			good.extra = false // a profile removed, its listener closed
		case 11:
			good.secondUser = true
		}
		v = good
		v.level = []string{"info", "debug", "warn"}[i%3]
		v.perSession = 1 + i%3
		reload(v)
		// Ready once a new profile's token has come (the reload fetches it at once).
		deadline := time.Now().Add(10 * time.Second)
		for st, body := get("/readyz"); st != http.StatusOK; st, body = get("/readyz") {
			if time.Now().After(deadline) {
				t.Fatalf("/readyz after reload %d: %d %s", i, st, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		switch i {
		case 5:
			if err := sendTo(lateAddr, localUser, localPass, dave, messageWith(uniqueMarker(t))); err != nil {
				t.Fatalf("the listener a reload added: %v", err)
			}
		case 8:
			if c, err := net.DialTimeout("tcp", extraAddr, time.Second); err == nil {
				c.Close()
				t.Fatal("the listener of a removed profile still accepts")
			}
		case 11:
			c := dialRaw(t, imapAddr)
			c.send(imapLogin("second", "second-pw"))
			if l := c.until("a1 "); !strings.HasPrefix(l, "a1 OK") {
				t.Fatalf("the local user a reload added: %s", l)
			}
		}
	}
	// POST /reload does the same.
	req, _ := http.NewRequest("POST", "http://"+adminAddr+"/reload", nil)
	req.SetBasicAuth("ops", "ops-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "reloaded") {
		t.Fatalf("POST /reload: %d %s", resp.StatusCode, body)
	}

	close(stop)
	senders.Wait()
	if failed.Load() > 0 || sent.Load() < 100 {
		t.Fatalf("%d messages sent, %d refused during 20 reloads", sent.Load(), failed.Load())
	}
	markers.Range(func(k, _ any) bool {
		waitForMessage(t, bob, k.(string))
		return true
	})
	for i, c := range idlers {
		c.send("DONE\r\n")
		if l := c.until("a3 "); !strings.HasPrefix(l, "a3 OK") {
			t.Fatalf("IDLE client %d after 20 reloads: %s", i, l)
		}
	}
	if n := env.idp.TokenRequestsFor("reload-sender") - tokensBefore; n > 1 {
		t.Fatalf("%d token requests for an unchanged credential over 20 reloads: the cache must be kept", n)
	}
	t.Logf("%d messages through 20 reloads (3 refused), 4 IDLE sessions kept, %d token requests", sent.Load(), env.idp.TokenRequestsFor("reload-sender")-tokensBefore)
}
