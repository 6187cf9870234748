package proxy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

func TestSMTPReplyMapping(t *testing.T) {
	rcpt := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	busy := &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	for _, tc := range []struct {
		name string
		err  error
		code int
	}{
		{"upstream 5xx stays 5xx", rcpt, 550},
		{"upstream 4xx stays 4xx", busy, 452},
		{"token failure is temporary", &upstream.Error{Profile: "p", Stage: "token", Err: &tokens.Error{Profile: "p", Err: errors.New("down")}}, 454},
		{"refused login is temporary, never 535", &upstream.Error{Profile: "p", Stage: "auth", Err: &smtp.SMTPError{Code: 535}}, 454},
		{"unreachable is temporary", &upstream.Error{Profile: "p", Stage: "connect", Err: errors.New("refused")}, 451},
		{"lost mid-message is temporary", &upstream.Error{Profile: "p", Stage: "session", Err: fmt.Errorf("x: %w", errors.New("EOF"))}, 451},
		{"anything else is temporary", errors.New("odd"), 451},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var se *smtp.SMTPError
			if !errors.As(smtpReply(tc.err), &se) || se.Code != tc.code {
				t.Fatalf("got %v, want %d", smtpReply(tc.err), tc.code)
			}
		})
	}
}

func TestLoginServerAcceptsUsernameWithCommandOrAfterPrompt(t *testing.T) {
	var got [2]string
	check := func(u, p string) error { got = [2]string{u, p}; return nil }
	l := &loginServer{check: check}
	if ch, done, _ := l.Next(nil); string(ch) != "Username:" || done {
		t.Fatalf("first prompt %q", ch)
	}
	l.Next([]byte("app"))
	if _, done, err := l.Next([]byte("pw")); !done || err != nil || got != [2]string{"app", "pw"} {
		t.Fatalf("bare AUTH LOGIN: %v %v %v", done, err, got)
	}
	l = &loginServer{check: check}
	if ch, _, _ := l.Next([]byte("app2")); string(ch) != "Password:" { // AUTH LOGIN <b64 user>
		t.Fatalf("after initial username: %q", ch)
	}
	l.Next([]byte("pw2"))
	if got != [2]string{"app2", "pw2"} {
		t.Fatalf("got %v", got)
	}
}

// One failure is one class in the metrics, whatever the protocol: an SMTP
// upstream's 535 and an IMAP upstream's NO are both the upstream refusing
// mailproxy's login.
func TestErrorClassIsTheSameForEveryProtocol(t *testing.T) {
	smtpRefused := &upstream.Error{Profile: "p", Stage: upstream.StageAuth, Kind: upstream.Refused, Err: &upstream.RefusedError{Reply: "535 5.7.8 bad token"}}
	imapRefused := &upstream.Error{Profile: "p", Stage: upstream.StageAuth, Kind: upstream.Refused, Err: &upstream.RefusedError{Reply: "NO [AUTHENTICATIONFAILED]"}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{smtpRefused, "refused"},
		{imapRefused, "refused"},
		{&upstream.Error{Profile: "p", Stage: upstream.StageToken, Kind: upstream.PersonNeeded, Err: errors.New("invalid_grant")}, "sign_in"},
		{&upstream.Error{Profile: "p", Stage: upstream.StageToken, Err: errors.New("HTTP 503")}, "token"},
		{&upstream.Error{Profile: "p", Stage: upstream.StageConnect, Err: errors.New("refused")}, "unavailable"},
		{&smtp.SMTPError{Code: 550, Message: "no such user"}, "rejected"},
	} {
		if got := ErrorClass(tc.err); got != tc.want {
			t.Errorf("%v: class %q, want %q", tc.err, got, tc.want)
		}
	}
	if code, _ := imapLoginFailure(smtpRefused); code != "AUTHENTICATIONFAILED" {
		t.Errorf("a refusal is told as %s", code)
	}
}

// Replies carry printable ASCII only, whatever bytes a client sent.
func TestOneLineIsPrintableASCII(t *testing.T) {
	got := oneLine("X\xff\xfe\x00\x1b[31mé\r\nY")
	for i := 0; i < len(got); i++ {
		if got[i] < 0x20 || got[i] >= 0x7f {
			t.Fatalf("oneLine kept byte %#x: %q", got[i], got)
		}
	}
	if !strings.HasPrefix(got, "X") || !strings.HasSuffix(got, "Y") {
		t.Fatalf("oneLine lost the text: %q", got)
	}
}
