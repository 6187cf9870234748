package upstream

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

type staticToken string

func (s staticToken) Token(context.Context) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: string(s)}, nil
}

// scripted runs a fake server: for each step, it expects a line from the
// client starting with step[0] ("" = expect nothing) and answers step[1].
func scripted(t *testing.T, greeting string, steps [][2]string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		c.Write([]byte(greeting + "\r\n"))
		for _, st := range steps {
			if st[0] != "" {
				line, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, st[0]) {
					c.Write([]byte("* BYE test server expected " + st[0] + ", got " + strings.TrimSpace(line) + "\r\n"))
					return
				}
			}
			c.Write([]byte(st[1]))
		}
		r.ReadString('\n') // hold the connection until the client is done
	}()
	return l.Addr().String()
}

const tok = "tok-123"

var ir = base64.StdEncoding.EncodeToString([]byte("user=u@x\x01auth=Bearer " + tok + "\x01\x01"))

func imapUp(addr, mech string) *IMAP {
	return NewIMAP(MailboxOptions{Profile: "p", Addr: addr, TLS: "none", Auth: Auth{Mechanism: mech, User: "u@x", Password: `pw "q"`, Tokens: staticToken(tok)}})
}

func TestIMAPLoginShapes(t *testing.T) {
	googleJSON := base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`))
	for _, tc := range []struct {
		name     string
		mech     string
		greeting string
		steps    [][2]string
		caps     string // want, joined
		refused  string // want a *RefusedError containing this
	}{
		{"Dovecot: SASL-IR, capabilities in the OK", MechXOAUTH2, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready",
			[][2]string{{"a3 AUTHENTICATE XOAUTH2 " + ir, "a3 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n"}}, "IMAP4rev1 IDLE MOVE", ""},
		{"Exchange: no SASL-IR, no capabilities after login", MechXOAUTH2, "* OK The Microsoft Exchange IMAP4 service is ready.",
			[][2]string{{"a2 CAPABILITY", "* CAPABILITY IMAP4 IMAP4rev1 AUTH=XOAUTH2\r\na2 OK CAPABILITY completed.\r\n"},
				{"a3 AUTHENTICATE XOAUTH2\r\n", "+ \r\n"}, {ir, "a3 OK AUTHENTICATE completed.\r\n"},
				{"a4 CAPABILITY", "* CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE\r\na4 OK CAPABILITY completed.\r\n"}}, "IMAP4 IMAP4rev1 IDLE MOVE", ""},
		{"Exchange: direct NO", MechXOAUTH2, "* OK [CAPABILITY IMAP4rev1 SASL-IR] ready",
			[][2]string{{"a3 AUTHENTICATE", "a3 NO AUTHENTICATE failed.\r\n"}}, "", "server refused the login: NO AUTHENTICATE failed."},
		{"Exchange: OK, then not connected", MechXOAUTH2, "* OK [CAPABILITY IMAP4rev1 SASL-IR] ready",
			[][2]string{{"a3 AUTHENTICATE", "a3 OK AUTHENTICATE completed.\r\n"}, {"a4 CAPABILITY", "a4 BAD User is authenticated but not connected.\r\n"}},
			"", "User is authenticated but not connected"},
		{"Google: JSON challenge, empty answer, NO", MechXOAUTH2, "* OK [CAPABILITY IMAP4rev1 SASL-IR] Gimap ready",
			[][2]string{{"a3 AUTHENTICATE", "+ " + googleJSON + "\r\n"}, {"\r\n", "a3 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"}},
			"", `server said {"status":"401"`},
		{"OAUTHBEARER: error challenge answered with %x01", MechOAUTHBEARER, "* OK [CAPABILITY IMAP4rev1 SASL-IR] ready",
			[][2]string{{"a3 AUTHENTICATE OAUTHBEARER ", "+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token"}`)) + "\r\n"}, {"AQ==\r\n", "a3 NO SASL authentication failed\r\n"}},
			"", "invalid_token"},
		{"LOGIN for basic auth, quoted", MechLogin, "* OK [CAPABILITY IMAP4rev1] ready",
			[][2]string{{`a3 LOGIN "u@x" "pw \"q\""`, "a3 OK [CAPABILITY IMAP4rev1 IDLE] done\r\n"}}, "IMAP4rev1 IDLE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scripted(t, tc.greeting, tc.steps)
			conn, caps, err := imapUp(addr, tc.mech).Login(context.Background())
			if tc.refused != "" {
				var re *RefusedError
				if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("got %v, want a refusal with %q", err, tc.refused)
				}
				if strings.Contains(err.Error(), tok) {
					t.Fatal("the token is in the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if got := strings.Join(caps, " "); got != tc.caps {
				t.Fatalf("capabilities %q, want %q", got, tc.caps)
			}
		})
	}
	addr := scripted(t, "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready", nil)
	if _, _, err := imapUp(addr, MechLogin).Login(context.Background()); err == nil || !strings.Contains(err.Error(), "LOGINDISABLED: set upstream tls") {
		t.Fatalf("LOGINDISABLED: %v", err)
	}
}

func TestPOP3LoginShapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mech    string
		steps   [][2]string
		refused string // a *RefusedError containing this; "temp:" prefix: an error that is not a refusal
	}{
		{"XOAUTH2 two-step", MechXOAUTH2, [][2]string{{"AUTH XOAUTH2\r\n", "+ \r\n"}, {ir, "+OK Logged in.\r\n"}}, ""},
		{"Microsoft: direct -ERR", MechXOAUTH2, [][2]string{{"AUTH XOAUTH2", "+ \r\n"}, {ir, "-ERR Authentication failure: unknown user name or bad password.\r\n"}}, "unknown user name"},
		{"Google: challenge then -ERR", MechXOAUTH2, [][2]string{{"AUTH XOAUTH2", "+ \r\n"}, {ir, "+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"400","schemes":"Bearer"}`)) + "\r\n"}, {"\r\n", "-ERR [AUTH] Invalid credentials.\r\n"}}, `server said {"status":"400"`},
		{"temporary failure is not a refusal", MechXOAUTH2, [][2]string{{"AUTH XOAUTH2", "+ \r\n"}, {ir, "-ERR [SYS/TEMP] try later\r\n"}}, "temp:[SYS/TEMP]"},
		{"USER/PASS", MechLogin, [][2]string{{"USER u@x", "+OK\r\n"}, {`PASS pw "q"`, "+OK\r\n"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scripted(t, "+OK POP3 ready", tc.steps)
			up := NewPOP3(MailboxOptions{Profile: "p", Addr: addr, TLS: "none", Auth: Auth{Mechanism: tc.mech, User: "u@x", Password: `pw "q"`, Tokens: staticToken(tok)}})
			conn, err := up.Login(context.Background())
			switch temp, isTemp := strings.CutPrefix(tc.refused, "temp:"); {
			case tc.refused == "":
				if err != nil {
					t.Fatal(err)
				}
				conn.Close()
			case isTemp:
				if err == nil || IsRefused(err) || !strings.Contains(err.Error(), temp) {
					t.Fatalf("got %v, want a temporary failure", err)
				}
			default:
				if !IsRefused(err) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("got %v, want a refusal with %q", err, tc.refused)
				}
			}
		})
	}
}
