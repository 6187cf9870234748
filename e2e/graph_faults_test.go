package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/idp"
)

// graphMessage is a message from the double's mailbox to one recipient.
func graphMessage(to, marker string) []byte {
	return []byte("From: " + graphMailbox + "\r\nTo: " + to + "\r\nSubject: " + marker + "\r\n\r\nbody of " + marker + "\r\n")
}

// Graph throttles 30 % of requests while 8 apps send 200 messages: every
// message is delivered exactly once, none is refused, mailproxy keeps to 4
// requests in flight, and the request count shows no storm.
func TestGraphThrottlingDeliversEveryMessageOnce(t *testing.T) {
	need(t)
	g := graphDouble(t)
	addr, adminAddr := freeAddr(t), freeAddr(t)
	startProxy(t, "admin: {listen: "+adminAddr+", token: admin-bearer}\nprofiles:\n"+graphProfile(t, "m365", addr, "", ""), addr, adminAddr)
	// The token first, so that only sendMail is throttled.
	if r := pySend(t, addr, localUser, localPass, "warm@partner.example", graphMessage("warm@partner.example", uniqueMarker(t)), 1); !r.OK {
		t.Fatalf("%+v", r)
	}
	g.Throttle(0.3, "0.2")
	defer g.Throttle(0, "")
	before, throttledBefore := g.Requests(), g.Throttled()
	marker := uniqueMarker(t)
	var wg sync.WaitGroup
	for s := range 8 {
		wg.Go(func() {
			msg := []byte(fmt.Sprintf("From: %s\r\nTo: load@partner.example\r\nSubject: %s-%d-@N@\r\n\r\nunder throttling\r\n", graphMailbox, marker, s))
			if r := pySend(t, addr, localUser, localPass, "load@partner.example", msg, 25); !r.OK {
				t.Errorf("sender %d: %+v", s, r)
			}
		})
	}
	wg.Wait()
	requests, throttled := g.Requests()-before, g.Throttled()-throttledBefore
	t.Logf("200 messages: %d Graph requests, %d throttled, at most %d in flight", requests, throttled, g.MaxInFlight())
	for s := range 8 {
		for i := range 25 {
			if n := len(delivered(g, "load@partner.example", fmt.Sprintf("%s-%d-%d\r\n", marker, s, i))); n != 1 {
				t.Fatalf("message %d of sender %d delivered %d times", i, s, n)
			}
		}
	}
	if throttled < 40 || requests > 2*200 {
		t.Fatalf("%d requests (%d throttled) for 200 messages", requests, throttled)
	}
	if g.MaxInFlight() > 4 {
		t.Fatalf("%d requests in flight at once for one mailbox", g.MaxInFlight())
	}
	_, body := get(t, "http://"+adminAddr+"/metrics", "admin-bearer")
	for _, re := range []string{`mailproxy_graph_throttled_total\{profile="m365"\} [1-9]`, `mailproxy_graph_requests_total\{class="2xx",profile="m365"\} [1-9]`,
		`mailproxy_graph_retries_total\{profile="m365",reason="throttled"\} [1-9]`} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("/metrics lacks %s:\n%s", re, grepLines(body, "graph"))
		}
	}
}

// Graph down: apps are told it is temporary (451, -ERR [SYS/TEMP]) in
// bounded time, and the same process works again once Graph is back.
func TestGraphDownIsTemporaryThenRecovers(t *testing.T) {
	need(t)
	g := graphDouble(t)
	smtpAddr, pop3Addr := freeAddr(t), freeAddr(t)
	startProxy(t, "profiles:\n"+graphProfile(t, "m365", smtpAddr, pop3Addr, ""), smtpAddr, pop3Addr)
	if r := pySend(t, smtpAddr, localUser, localPass, "warm@partner.example", graphMessage("warm@partner.example", uniqueMarker(t)), 1); !r.OK {
		t.Fatalf("%+v", r)
	}
	g.SetDown(true)
	defer g.SetDown(false)
	marker := uniqueMarker(t)
	start := time.Now()
	r := pySend(t, smtpAddr, localUser, localPass, "down@partner.example", []byte("From: "+graphMailbox+"\r\nTo: down@partner.example\r\nSubject: "+marker+"\r\n\r\nx\r\n"), 1)
	if r.OK || r.Code != 451 || !strings.Contains(r.Msg, "503") {
		t.Fatalf("Graph down: %+v", r)
	}
	if took := time.Since(start); took > 70*time.Second {
		t.Fatalf("the app waited %v", took)
	}
	c := dialRaw(t, pop3Addr)
	c.send("USER " + localUser + "\r\nPASS " + localPass + "\r\n")
	c.line()
	if l := c.line(); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("POP3 with Graph down: %q", l)
	}
	g.SetDown(false)
	if r := pySend(t, smtpAddr, localUser, localPass, "down@partner.example", []byte("From: "+graphMailbox+"\r\nTo: down@partner.example\r\nSubject: "+marker+"\r\n\r\nx\r\n"), 1); !r.OK {
		t.Fatalf("after Graph is back: %+v", r)
	}
	exactlyOnce(t, g, marker, []string{"down@partner.example"})
	c.send("USER " + localUser + "\r\nPASS " + localPass + "\r\n")
	c.line()
	if l := c.line(); l != "+OK Logged in" {
		t.Fatalf("POP3 after Graph is back: %q", l)
	}
}

// Every credential type that yields a token works with graph: a secret, a
// certificate, OAuth 2.0 client credentials at the token URL configured,
// and a public app a person signed in to (/me).
func TestEveryCredentialTypeSendsThroughGraph(t *testing.T) {
	need(t)
	g := graphDouble(t)
	certPEM, _ := os.ReadFile(env.certPEM)
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: msCertApp, Cert: cert, Mailbox: alice, Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
	tokenURL := fmt.Sprintf("%s/%s/oauth2/v2.0/token", env.idpURL, tenant)
	g.AddMailbox(gina, "5f0c5c8e-1111-4222-8333-000000000009")
	storeDir := t.TempDir()
	for _, tc := range []struct{ name, mailbox, user, creds string }{
		{"microsoft365 certificate", graphMailbox, graphUserID, fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      certificate_file: %s\n", env.idpURL, tenant, msCertApp, env.certPEM)},
		{"oauth2 client credentials", graphMailbox, "", fmt.Sprintf("      type: oauth2\n      token_url: %s\n      client_id: %s\n      client_secret: %s\n", tokenURL, graphEnv.appID, graphSecret)},
		{"microsoft365 public app, signed in (/me)", gina, "", publicCreds(gina)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			y := graphProfileAs("m365", tc.mailbox, tc.user, addr, "", "", tc.creds)
			cfg := writeConfig(t, fmt.Sprintf("token_store: {path: %s/tokens.enc, key: %q}\nprofiles:\n", storeDir, "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=")+y)
			if strings.Contains(tc.name, "public") {
				tokenAdd(t, cfg, "m365", gina)
			}
			startProxyFile(t, cfg, addr)
			marker := uniqueMarker(t)
			if r := pySend(t, addr, localUser, localPass, "cred@partner.example", []byte("From: "+tc.mailbox+"\r\nTo: cred@partner.example\r\nSubject: "+marker+"\r\n\r\nx\r\n"), 1); !r.OK {
				t.Fatalf("%+v", r)
			}
			exactlyOnce(t, g, marker, []string{"cred@partner.example"})
		})
	}
}

// A revoked app secret is the token error path of every other profile:
// 454 naming the fix, and mailproxy check says so.
func TestGraphRevokedSecretIsATokenError(t *testing.T) {
	need(t)
	graphDouble(t)
	appID := "22222222-aaaa-4bbb-8ccc-00000000beef"
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: appID, Secret: "first-secret", Mailbox: colleague, Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
	addr := freeAddr(t)
	y := graphProfileAs("colleague", colleague, "", addr, "", "", fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: first-secret\n", env.idpURL, tenant, appID))
	cfg := writeConfig(t, "profiles:\n"+y)
	startProxyFile(t, cfg, addr)
	send := func() sendResult {
		return pySend(t, addr, localUser, localPass, "r@partner.example", []byte("From: "+colleague+"\r\nTo: r@partner.example\r\nSubject: "+uniqueMarker(t)+"\r\n\r\nx\r\n"), 1)
	}
	if r := send(); !r.OK {
		t.Fatalf("%+v", r)
	}
	// The secret is removed in Entra ID, and the token it got expires.
	env.idp.AddMicrosoftApp(idp.MicrosoftApp{Tenant: tenant, ClientID: appID, Secret: "new-secret", Mailbox: colleague, Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
	env.idp.ExpireAccess(colleague)
	r := send()
	if r.OK || r.Code != 454 || !strings.Contains(r.Msg, "invalid_client") || !strings.Contains(r.Msg, "AADSTS7000215") {
		t.Fatalf("revoked secret: %+v", r)
	}
	out, _ := mailproxyCmd("check", "-config", cfg, "colleague").CombinedOutput()
	if !strings.Contains(string(out), "token  FAIL") || !strings.Contains(string(out), "invalid_client") {
		t.Fatalf("check:\n%s", out)
	}
}

// mailproxy check proves a Graph profile: a token, the inbox's count with
// the granted permissions, and with -send-to a message through sendMail.
func TestCheckProvesAGraphProfile(t *testing.T) {
	need(t)
	g := graphDouble(t)
	cfg := writeConfig(t, "profiles:\n"+graphProfile(t, "m365", freeAddr(t), freeAddr(t), ""))
	out, err := mailproxyCmd("check", "-config", cfg, "-send-to", colleague, "m365").CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, re := range []string{`token  ok    valid until `, `graph  ok    \S+/v1\.0/users/` + graphUserID + ` \(app-only\): Inbox has \d+ message\(s\)`,
		`send   ok    test message from ` + graphMailbox + ` to ` + colleague + ` accepted by Graph`} {
		if !regexp.MustCompile(re).Match(out) {
			t.Fatalf("check output lacks %s:\n%s", re, out)
		}
	}
	exactlyOnce(t, g, "mailproxy check m365", []string{colleague})
}
