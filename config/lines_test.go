package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// lineNo is the 1-based line of doc that contains needle; it must be one.
func lineNo(t *testing.T, doc, needle string) int {
	t.Helper()
	n := 0
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, needle) {
			if n != 0 {
				t.Fatalf("%q is on lines %d and %d", needle, n, i+1)
			}
			n = i + 1
		}
	}
	if n == 0 {
		t.Fatalf("%q is not in the document", needle)
	}
	return n
}

func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestProblemErrorPrefixesTheLine(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Path: "profiles.a.mailbox", Line: 7, Msg: "required"}, "line 7: profiles.a.mailbox: required"},
		{Problem{Path: "profiles.a.mailbox", Msg: "required"}, "profiles.a.mailbox: required"},
	} {
		if got := tc.p.Error(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.p, got, tc.want)
		}
	}
}

const inheritingDoc = `log: {level: info}
profiles:
  parent:
    mailbox: parent@contoso.com
    smtp:
      listen: "2525"
      upstream:
        host: smtp.office365.com
        tls: sometimes
    local_users:
      - username: app
        password: pw
      - name: no-password
        username: other
    credentials: {type: basic, password: pw}
  child:
    inherit: parent
    mailbox: child@contoso.com
    smtp:
      listen: "2526"
      local_auth: maybe
  bare:
    imap: {listen: "1143", upstream: {host: outlook.office365.com}}
    local_users: [{username: bare, password: pw}]
    credentials: {type: basic, password: pw}
`

func TestProblemsNameTheLineAValueIsWrittenOnThroughInheritance(t *testing.T) {
	_, err := Decode([]byte(inheritingDoc))
	tls := lineNo(t, inheritingDoc, "tls: sometimes")
	other := lineNo(t, inheritingDoc, "name: no-password")
	wantProblems(t, err,
		// written in the child
		fmt.Sprintf("line %d: profiles.child.smtp.local_auth: \"maybe\" is not one of password, none", lineNo(t, inheritingDoc, "local_auth: maybe")),
		// inherited: where the parent writes it
		fmt.Sprintf("line %d: profiles.child.smtp.upstream.tls: \"sometimes\"", tls),
		fmt.Sprintf("line %d: profiles.parent.smtp.upstream.tls: \"sometimes\"", tls),
		// a missing key points at the mapping it belongs in
		fmt.Sprintf("line %d: profiles.child.local_users[1].password: required", other),
		fmt.Sprintf("line %d: profiles.parent.local_users[1].password: required", other),
		fmt.Sprintf("line %d: profiles.bare.mailbox: required", lineNo(t, inheritingDoc, "bare:")),
	)
	var p Problem
	if !errors.As(err, &p) || p.Line == 0 {
		t.Errorf("errors.As(Problem) = %+v", p)
	}
}

func TestYAMLErrorsInAnInheritingProfileNameTheLineAsWritten(t *testing.T) {
	for _, tc := range []struct {
		name, child, needle, want string
	}{
		{"type error", "    smtp:\n      listen: \"2526\"\n      max_message_bytes: lots\n", "lots", "cannot unmarshal !!str `lots` into int64"},
		{"unknown key", "    smtp:\n      listen: \"2526\"\n    mailbx: c@x\n", "mailbx", "field mailbx not found"},
		{"secret type", "    local_users:\n      - username: c\n        password: [a, b]\n", "[a, b]", "a secret is a string"},
		{"duration", "    smtp:\n      listen: \"2526\"\n      upstream: {timeout: 30}\n", "timeout: 30", `profiles.child.smtp.upstream.timeout: "30" is not a duration: write it with a unit, e.g. "30s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `profiles:
  parent:
    mailbox: parent@contoso.com
    smtp:
      listen: "2525"
      upstream: {host: smtp.office365.com}
    local_users: [{username: app, password: pw}]
    credentials: {type: basic, password: pw}
  zz-padding:
    inherit: parent
  child:
    inherit: parent
` + tc.child
			_, err := Decode([]byte(doc))
			wantProblems(t, err, fmt.Sprintf("line %d: ", lineNo(t, doc, tc.needle)), tc.want)
		})
	}
}

func TestInheritanceCyclesAndUnknownParentsNameTheInheritLine(t *testing.T) {
	doc := `profiles:
  a:
    inherit: b
    mailbox: a@x
  b:
    inherit: a
  c:
    inherit: nowhere
  d:
    inherit: d
`
	_, err := Decode([]byte(doc))
	wantProblems(t, err,
		fmt.Sprintf("line %d: profiles.b.inherit: cycle a -> b -> a", lineNo(t, doc, "inherit: a")),
		fmt.Sprintf("line %d: profiles.c.inherit: no profile named \"nowhere\"", lineNo(t, doc, "inherit: nowhere")),
		fmt.Sprintf("line %d: profiles.d.inherit: cycle d -> d", lineNo(t, doc, "inherit: d")),
	)
}

func TestInheritanceMergesMappingsAndReplacesTheRest(t *testing.T) {
	cfg, err := Decode([]byte(`
profiles:
  base: &base
    mailbox: base@x
    smtp: &smtp
      listen: "2525"
      upstream: {host: h, messages_per_session: 5}
    local_users: [{username: a, password: pa}, {username: b, password: pb}]
    credentials: {type: basic, password: pw}
  anchored:
    <<: *base
    mailbox: anchored@x
    smtp: {<<: *smtp, listen: "2527"}
  child:
    inherit: anchored
    smtp:
      listen: "2528"
      upstream: {tls: implicit}
    local_users: [{username: c, password: pc}]
  grandchild:
    inherit: child
    imap: {listen: "1143", upstream: {host: i}}
    smtp: ~
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Profiles["child"]
	if c.Mailbox != "anchored@x" || c.SMTP.Listen != "127.0.0.1:2528" || c.SMTP.Upstream.Host != "h:465" ||
		c.SMTP.Upstream.MessagesPerSession != 5 || c.Credentials.Type != CredBasic || c.Inherit != "anchored" {
		t.Errorf("child: %+v, smtp %+v", c, c.SMTP)
	}
	if len(c.LocalUsers) != 1 || c.LocalUsers[0].Username != "c" {
		t.Errorf("a sequence is replaced, not merged: %+v", c.LocalUsers)
	}
	g := cfg.Profiles["grandchild"]
	if g.SMTP != nil || g.IMAP == nil || g.Mailbox != "anchored@x" || g.LocalUsers[0].Username != "c" {
		t.Errorf("grandchild: %+v", g)
	}
	if b := cfg.Profiles["base"]; b.SMTP.Listen != "127.0.0.1:2525" || b.SMTP.Upstream.TLS != TLSStartTLS || len(b.LocalUsers) != 2 {
		t.Errorf("the parent changed: %+v", b.SMTP)
	}
}
