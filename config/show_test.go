package config

import (
	"strings"
	"testing"
)

func TestShowSaysWhereEachValueComesFrom(t *testing.T) {
	cfg, err := Decode([]byte(`token_store: {path: /tmp/t.enc, key: "${env:KEY}"}
profiles:
  receiving:
    mailbox: inbox@contoso.com
    imap:
      listen: 127.0.0.1:1143
      upstream: {host: outlook.office365.com:993}
    local_users: [{name: erp, username: erp, password: s3cret}]
    credentials: {type: microsoft365, tenant_id: contoso, client_id: abc, client_secret: "${env:SECRET}"}
  newaction:
    inherit: receiving
    mailbox: newaction@contoso.com
    imap:
      listen: 127.0.0.1:1144
`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := cfg.Show(&out, "newaction"); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"# profile newaction (inherits receiving)",
		"mailbox: newaction@contoso.com # line 12",
		"listen: 127.0.0.1:1144 # line 14",
		"host: outlook.office365.com:993 # inherited from receiving, line 7",
		"tls: implicit # default",
		"password: '[redacted]' # inherited from receiving, line 8",
		"client_secret: ${env:SECRET} # inherited from receiving, line 9",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
	if strings.Contains(s, "s3cret") {
		t.Fatalf("a secret is shown:\n%s", s)
	}
	if err := cfg.Show(&out, "nope"); err == nil || !strings.Contains(err.Error(), "profiles: newaction, receiving") {
		t.Fatalf("unknown profile: %v", err)
	}
}
