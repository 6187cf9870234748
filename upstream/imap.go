package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
)

// IMAP logs in to an upstream IMAP server and hands back the authenticated
// connection: after that, mailproxy only relays bytes.
type IMAP struct {
	o MailboxOptions
}

// NewIMAP returns an IMAP upstream; it connects on each Login.
func NewIMAP(o MailboxOptions) *IMAP {
	o.defaults()
	return &IMAP{o: o}
}

// Login connects, starts TLS, authenticates and returns the connection in
// the authenticated state with the server's capabilities after login.
// Errors are *Error; a refusal of the token or password wraps *RefusedError.
func (u *IMAP) Login(ctx context.Context) (net.Conn, []string, error) {
	c, caps, err := u.login(ctx)
	if err != nil {
		return nil, nil, err
	}
	return c.detach(), caps, nil
}

// Check logs in, selects INBOX and logs out: for mailproxy check. It
// returns the number of messages in INBOX.
func (u *IMAP) Check(ctx context.Context) (int, error) {
	c, _, err := u.login(ctx)
	if err != nil {
		return 0, err
	}
	defer c.conn.Close()
	exists := -1
	_, err = c.command("c1 SELECT INBOX", func(line string) {
		if n, ok := strings.CutSuffix(line, " EXISTS"); ok {
			exists, _ = strconv.Atoi(strings.TrimPrefix(n, "* "))
		}
	})
	if err != nil {
		return 0, fmt.Errorf("SELECT INBOX: %w", err)
	}
	c.command("c2 LOGOUT", nil)
	return exists, nil
}

func (u *IMAP) login(ctx context.Context) (*imapConn, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, u.o.LoginTimeout)
	defer cancel()
	var c *imapConn
	var caps []string
	err := u.o.Auth.login(ctx, u.o.Profile, IsRefused, func(tok *oauth2.Token) error {
		var err error
		if c, caps, err = u.open(ctx); err != nil {
			return err
		}
		if caps, err = c.authenticate(tok, caps); err != nil {
			c.conn.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return c, caps, nil
}

// open connects, reads the greeting and starts TLS; it returns the
// capabilities to log in with.
func (u *IMAP) open(ctx context.Context) (*imapConn, []string, error) {
	tc, err := dialText(ctx, &u.o)
	if err != nil {
		return nil, nil, err
	}
	c := &imapConn{textConn: tc}
	caps, err := c.greeting()
	if err == nil && u.o.TLS == "starttls" {
		if _, err = c.command("a1 STARTTLS", nil); err == nil {
			err = c.startTLS(ctx)
		}
		caps = nil // RFC 3501 §6.2.1: forget what was said before TLS
	}
	if err == nil && caps == nil {
		caps, err = c.capability("a2")
	}
	if err != nil {
		tc.conn.Close()
		return nil, nil, err
	}
	return c, caps, nil
}

type imapConn struct {
	*textConn
}

// greeting reads the server's first line and any capabilities in it.
func (c *imapConn) greeting() ([]string, error) {
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(line, "* OK"):
		return capsIn(line), nil
	case strings.HasPrefix(line, "* PREAUTH"):
		return nil, c.fail(errors.New("server greeted with PREAUTH: it must ask for a login"))
	}
	return nil, &Error{Profile: c.o.Profile, Stage: StageConnect, Err: fmt.Errorf("server greeting: %q", line)}
}

// command sends one tagged command and reads up to its completion. Each
// untagged line goes to untagged. A NO or BAD is an error carrying the reply.
func (c *imapConn) command(cmd string, untagged func(string)) (string, error) {
	tag, _, _ := strings.Cut(cmd, " ")
	if err := c.writeLine(cmd); err != nil {
		return "", err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return "", err
		}
		status, ok := tagged(line, tag)
		if !ok {
			if untagged != nil {
				untagged(line)
			}
			continue
		}
		if status != "OK" {
			return line, c.fail(fmt.Errorf("%s", line[len(tag)+1:]))
		}
		return line, nil
	}
}

// capability asks for the capabilities.
func (c *imapConn) capability(tag string) ([]string, error) {
	var caps []string
	done, err := c.command(tag+" CAPABILITY", func(line string) {
		if rest, ok := cutFold(line, "* CAPABILITY "); ok {
			caps = strings.Fields(rest)
		}
	})
	if err != nil {
		return nil, err
	}
	if caps == nil {
		caps = capsIn(done)
	}
	return caps, nil
}

// authenticate logs in with tok (or the password) and returns the
// capabilities after login.
func (c *imapConn) authenticate(tok *oauth2.Token, caps []string) ([]string, error) {
	a := c.o.Auth
	if a.Mechanism == MechLogin {
		if hasCap(caps, "LOGINDISABLED") {
			return nil, &Error{Profile: c.o.Profile, Stage: StageAuth, Kind: Refused, Err: errors.New("server says LOGINDISABLED: set upstream tls to starttls or implicit")}
		}
		return c.finishLogin(fmt.Sprintf("a3 LOGIN %s %s", imapQuote(a.User), imapQuote(a.Password)), nil)
	}
	host, port := splitPort(c.o.Addr)
	sc := a.client(tok, host, port, hasCap(caps, "SASL-IR"))
	mech, ir, err := sc.Start()
	if err != nil {
		return nil, &Error{Profile: c.o.Profile, Stage: StageAuth, Err: err}
	}
	cmd := "a3 AUTHENTICATE " + mech
	if ir != nil {
		cmd += " " + saslInitial(ir)
	}
	return c.finishLogin(cmd, func(challenge []byte) (string, error) {
		resp, err := sc.Next(challenge)
		if err != nil {
			return "*", nil // abort; the server answers BAD
		}
		return base64.StdEncoding.EncodeToString(resp), nil
	})
}

// finishLogin sends the login command, answers continuation requests with
// next, and reads the result. A NO or BAD is a *RefusedError.
func (c *imapConn) finishLogin(cmd string, next func([]byte) (string, error)) ([]string, error) {
	var caps []string
	if err := c.writeLine(cmd); err != nil {
		return nil, err
	}
	var challenge string
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(line, "+") && next != nil {
			b64 := strings.TrimSpace(strings.TrimPrefix(line, "+"))
			chal, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				chal = []byte(b64) // some servers send text
			}
			if len(chal) > 0 {
				challenge = strings.TrimSpace(string(chal))
			}
			resp, _ := next(chal)
			if err := c.writeLine(resp); err != nil {
				return nil, err
			}
			continue
		}
		if rest, ok := cutFold(line, "* CAPABILITY "); ok {
			caps = strings.Fields(rest)
			continue
		}
		status, ok := tagged(line, "a3")
		if !ok {
			continue
		}
		if status != "OK" {
			return nil, refused(c.o.Profile, &RefusedError{Reply: strings.TrimPrefix(line, "a3 "), Challenge: challenge})
		}
		if c := capsIn(line); c != nil {
			caps = c
		}
		break
	}
	if caps != nil {
		return caps, nil
	}
	// No capabilities with the OK: ask. This also proves the login is real
	// (Exchange may say OK, then BAD "User is authenticated but not connected").
	caps, err := c.capability("a4")
	if err != nil {
		var ue *Error
		if errors.As(err, &ue) {
			err = refused(c.o.Profile, &RefusedError{Reply: "after login: " + ue.Err.Error()})
		}
		return nil, err
	}
	return caps, nil
}

// tagged reports whether line completes tag, and its status (OK, NO, BAD).
func tagged(line, tag string) (string, bool) {
	rest, ok := strings.CutPrefix(line, tag+" ")
	if !ok {
		return "", false
	}
	status, _, _ := strings.Cut(rest, " ")
	return strings.ToUpper(status), true
}

// capsIn returns the capabilities of a [CAPABILITY ...] response code.
func capsIn(line string) []string {
	i := strings.Index(strings.ToUpper(line), "[CAPABILITY ")
	if i < 0 {
		return nil
	}
	rest := line[i+len("[CAPABILITY "):]
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return nil
	}
	return strings.Fields(rest[:end])
}

func hasCap(caps []string, name string) bool {
	return slices.ContainsFunc(caps, func(c string) bool { return strings.EqualFold(c, name) })
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// saslInitial encodes an initial response for the command line, where an
// empty one is "=" (RFC 4959, RFC 5034).
func saslInitial(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// imapQuote writes s as an IMAP quoted string (8-bit text included, as
// servers accept it), or as a LITERAL+ when it holds CR, LF or NUL, which a
// quoted string cannot.
func imapQuote(s string) string {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b == '\r' || b == '\n' || b == 0 {
			return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s
		}
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
