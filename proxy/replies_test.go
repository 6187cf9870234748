package proxy

import (
	"errors"
	"fmt"
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
