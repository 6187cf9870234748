package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
)

// POP3 logs in to an upstream POP3 server and hands back the authenticated
// connection (TRANSACTION state): after that, mailproxy only relays bytes.
type POP3 struct {
	o MailboxOptions
}

// NewPOP3 returns a POP3 upstream; it connects on each Login.
func NewPOP3(o MailboxOptions) *POP3 {
	o.defaults()
	return &POP3{o: o}
}

// Login connects, starts TLS, authenticates and returns the connection.
// Errors are *Error; a refusal of the token or password wraps *RefusedError.
// A temporary refusal ("-ERR [SYS/TEMP]", "[IN-USE]") is not a refusal.
func (u *POP3) Login(ctx context.Context) (net.Conn, error) {
	c, err := u.login(ctx)
	if err != nil {
		return nil, err
	}
	return c.detach(), nil
}

// Check logs in, asks STAT and quits: for mailproxy check. It returns the
// number of messages in the maildrop.
func (u *POP3) Check(ctx context.Context) (int, error) {
	c, err := u.login(ctx)
	if err != nil {
		return 0, err
	}
	defer c.conn.Close()
	line, err := c.command("STAT")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, c.fail(fmt.Errorf("STAT: %q", line))
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, c.fail(fmt.Errorf("STAT: %q", line))
	}
	c.command("QUIT")
	return n, nil
}

func (u *POP3) login(ctx context.Context) (*pop3Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, u.o.LoginTimeout)
	defer cancel()
	var c *pop3Conn
	err := u.o.Auth.login(ctx, u.o.Profile, IsRefused, func(tok *oauth2.Token) error {
		var err error
		if c, err = u.open(ctx); err != nil {
			return err
		}
		if err = c.authenticate(tok); err != nil {
			c.conn.Close()
			return err
		}
		return nil
	})
	return c, err
}

// open connects, reads the greeting and starts TLS.
func (u *POP3) open(ctx context.Context) (*pop3Conn, error) {
	tc, err := dialText(ctx, &u.o)
	if err != nil {
		return nil, err
	}
	c := &pop3Conn{textConn: tc}
	line, err := c.readLine()
	if err == nil && !strings.HasPrefix(line, "+OK") {
		err = &Error{Profile: u.o.Profile, Stage: StageConnect, Err: fmt.Errorf("server greeting: %q", line)}
	}
	if err == nil && u.o.TLS == "starttls" {
		if _, err = c.command("STLS"); err == nil {
			err = c.startTLS(ctx)
		}
	}
	if err != nil {
		tc.conn.Close()
		return nil, err
	}
	return c, nil
}

type pop3Conn struct {
	*textConn
}

// command sends cmd and reads a one-line reply; -ERR is a *negativeReply.
func (c *pop3Conn) command(cmd string) (string, error) {
	if err := c.writeLine(cmd); err != nil {
		return "", err
	}
	line, err := c.readLine()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "+OK") {
		verb, _, _ := strings.Cut(cmd, " ")
		return line, c.fail(&negativeReply{cmd: verb, line: line})
	}
	return line, nil
}

// negativeReply is the server's -ERR to a command.
type negativeReply struct{ cmd, line string }

func (n *negativeReply) Error() string { return n.cmd + ": " + n.line }

// authenticate logs in: AUTH in the two-step form for tokens (they exceed
// POP3's 255-octet line, RFC 2449 §4), USER/PASS or AUTH PLAIN for passwords.
func (c *pop3Conn) authenticate(tok *oauth2.Token) error {
	a := c.o.Auth
	if a.Mechanism == MechLogin {
		if _, err := c.command("USER " + a.User); err != nil {
			return c.refused(err, "")
		}
		_, err := c.command("PASS " + a.Password)
		return c.refused(err, "")
	}
	host, port := splitPort(c.o.Addr)
	sc := a.client(tok, host, port, false)
	mech, ir, err := sc.Start()
	if err != nil {
		return &Error{Profile: c.o.Profile, Stage: StageAuth, Err: err}
	}
	cmd := "AUTH " + mech
	if ir != nil && len(cmd)+len(saslInitial(ir)) < 250 {
		cmd += " " + saslInitial(ir)
		ir = nil
	}
	if err := c.writeLine(cmd); err != nil {
		return err
	}
	challenge := ""
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(line, "+OK"):
			return nil
		case strings.HasPrefix(line, "+"):
			b64 := strings.TrimSpace(strings.TrimPrefix(line, "+"))
			chal, derr := base64.StdEncoding.DecodeString(b64)
			if derr != nil {
				chal = []byte(b64)
			}
			var resp []byte
			if ir != nil { // the initial response that did not fit the command line
				resp, ir = ir, nil
			} else {
				if len(chal) > 0 {
					challenge = strings.TrimSpace(string(chal))
				}
				if resp, err = sc.Next(chal); err != nil {
					if err := c.writeLine("*"); err != nil {
						return err
					}
					continue
				}
			}
			if err := c.writeLine(base64.StdEncoding.EncodeToString(resp)); err != nil {
				return err
			}
		default:
			return c.refused(&negativeReply{cmd: "AUTH", line: line}, challenge)
		}
	}
}

// refused turns a -ERR to a login into a *RefusedError, unless its response
// code (RFC 3206) says the failure is temporary. Other errors pass.
func (c *pop3Conn) refused(err error, challenge string) error {
	var neg *negativeReply
	if !errors.As(err, &neg) {
		return err
	}
	if strings.HasPrefix(neg.line, "-ERR [SYS/TEMP]") || strings.HasPrefix(neg.line, "-ERR [IN-USE]") {
		return &Error{Profile: c.o.Profile, Stage: StageAuth, Err: errors.New(neg.line)}
	}
	return refused(c.o.Profile, &RefusedError{Reply: neg.line, Challenge: challenge})
}
