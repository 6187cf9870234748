package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"mailproxy/tokens"
)

// Every credential type gets a token from the fake IdP and sends a real
// message through Postfix, whose Dovecot checks the token belongs to the mailbox.
func TestEveryCredentialTypeSendsThroughPostfix(t *testing.T) {
	need(t)
	key := tokens.NewKey()
	store := env.work + "/tokens-" + uniqueMarker(t) + ".enc"
	creds := map[string]struct{ mailbox, yaml, up string }{
		"microsoft365-secret": {alice, fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: ${env:E2E_MS_SECRET}\n", env.idpURL, tenant, msSecretApp), ""},
		"microsoft365-pem":    {alice, fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      certificate_file: %s\n", env.idpURL, tenant, msCertApp, env.certPEM), ""},
		"microsoft365-pfx":    {alice, fmt.Sprintf("      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      certificate_file: %s\n      certificate_password: %s\n", env.idpURL, tenant, msCertApp, env.certPFX, env.pfxPass), ""},
		"google-json":         {bob, fmt.Sprintf("      type: google_service_account\n      key_file: %s\n", env.saJSON), ""},
		"google-p12":          {alice, fmt.Sprintf("      type: google_service_account\n      key_file: %s\n      service_account: %s\n      token_url: %s/token\n", env.saP12, saEmail, env.idpURL), ""},
		"oauth2-client":       {bob, genericCreds(), ""},
		"oauth2-oauthbearer":  {bob, genericCreds(), "        mechanism: oauthbearer\n"},
		"basic-plain":         {bob, "      type: basic\n      password: bob-pw\n", ""},
		"basic-login":         {bob, "      type: basic\n      password: bob-pw\n", "        mechanism: login\n"},
		"oauth2-refresh":      {bob, fmt.Sprintf("      type: oauth2\n      grant: refresh_token\n      token_url: %s/token\n      client_id: %s\n      client_secret: %s\n      refresh_token: %s\n", env.idpURL, genericID, genericSec, bobRefresh), ""},
	}
	cfg := fmt.Sprintf("token_store:\n  path: %s\n  key: %s\nprofiles:\n", store, key)
	addrs := map[string]string{}
	for name, c := range creds {
		addrs[name] = freeAddr(t)
		cfg += oauthProfile(name, addrs[name], c.mailbox, c.yaml, c.up)
	}
	// Implicit TLS upstream (submissions, port 465 style).
	addrs["implicit-tls"] = freeAddr(t)
	cfg += fmt.Sprintf(`  implicit-tls:
    mailbox: %s
    smtp:
      listen: %s
      upstream:
        host: localhost:%d
        tls: implicit
        ca_file: %s
    local_users:
      - username: %s
        password: %q
    credentials:
%s`, bob, addrs["implicit-tls"], env.subsPort, env.ca, localUser, localPass, genericCreds())
	creds["implicit-tls"] = struct{ mailbox, yaml, up string }{}
	os.Setenv("E2E_MS_SECRET", msSecret)
	defer os.Unsetenv("E2E_MS_SECRET")
	var all []string
	for _, a := range addrs {
		all = append(all, a)
	}
	p := startProxy(t, cfg, all...)
	for name := range creds {
		t.Run(name, func(t *testing.T) {
			marker := uniqueMarker(t)
			if r := pySend(t, addrs[name], localUser, localPass, bob, simpleMessage(marker), 1); !r.OK {
				t.Fatalf("send: %+v", r)
			}
			waitForMessage(t, bob, marker)
		})
	}

	// The refresh token rotated: a new process must use the stored one
	// (the initial one is revoked by rotation) and still send.
	p.stop()
	p2 := startProxy(t, cfg, addrs["oauth2-refresh"])
	marker := uniqueMarker(t)
	if r := pySend(t, addrs["oauth2-refresh"], localUser, localPass, bob, simpleMessage(marker), 1); !r.OK {
		t.Fatalf("after restart with a rotated refresh token: %+v\n%s", r, p2.logs.String())
	}
	waitForMessage(t, bob, marker)
	logs := p.logs.String() + p2.logs.String()
	for _, secret := range []string{msSecret, genericSec, bobRefresh, env.pfxPass} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%q...) appears in mailproxy's log", secret[:4])
		}
	}
}

func TestCheckCommandSaysWhatWorkedAndWhatFailed(t *testing.T) {
	need(t)
	good := "profiles:\n" + oauthProfile("crm", freeAddr(t), bob, genericCreds(), "")
	bad := "profiles:\n" + oauthProfile("crm", freeAddr(t), alice, fmt.Sprintf(
		"      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: not-the-secret\n",
		env.idpURL, tenant, msSecretApp), "")
	run := func(cfg string, args ...string) (string, error) {
		cmd := exec.Command(env.bin, append([]string{"check", "-config", writeConfig(t, cfg)}, args...)...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+env.idpCA)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(good, "-send-to", bob, "crm")
	if err != nil {
		t.Fatalf("check of a working profile failed: %v\n%s", err, out)
	}
	for _, want := range []string{"token  ok", "smtp   ok", "AUTH XOAUTH2 as bob@example.test accepted", "send   ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	waitForMessage(t, bob, "mailproxy check crm")

	out, err = run(bad, "crm")
	if err == nil {
		t.Fatalf("check of a profile with a wrong secret succeeded:\n%s", out)
	}
	for _, want := range []string{"token  FAIL", "AADSTS7000215", `profile "crm"`} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not-the-secret") {
		t.Errorf("check prints the secret:\n%s", out)
	}
}
