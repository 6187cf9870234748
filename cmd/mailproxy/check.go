package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailproxy/config"
	"mailproxy/upstream"
)

// cmdCheck proves a profile works: it gets a token, logs in upstream and,
// with -send-to, sends a test message. It says what worked and what failed.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	sendTo := fs.String("send-to", "", "send a test message to this address")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return errUsage
	}
	name := fs.Arg(0)
	a, err := loadApp(*cfgPath, name, stderr)
	if err != nil {
		return err
	}
	defer func() {
		for _, up := range a.smtp {
			up.Close()
		}
	}()
	if !runCheck(ctx, a, name, *sendTo, stdout) {
		return errors.New("check failed: see the FAIL lines above")
	}
	return nil
}

// runCheck gets a token for profile name, logs in to each of its upstreams
// and, with sendTo, sends a test message; it writes a line per step and
// reports whether all worked. The admin page's Test button runs it too.
func runCheck(ctx context.Context, a *app, name, sendTo string, stdout io.Writer) bool {
	p := a.cfg.Profiles[name]
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	failed := false
	step := func(what string, f func() (string, error)) bool {
		detail, err := f()
		if err != nil {
			failed = true
			fmt.Fprintf(stdout, "  %-6s FAIL  %v\n", what, err)
			return false
		}
		fmt.Fprintf(stdout, "  %-6s ok    %s\n", what, detail)
		return true
	}
	fmt.Fprintf(stdout, "profile %q: credentials %s, mailbox %s\n", name, p.Credentials.Type, p.Mailbox)
	tokenOK := true
	if c := a.caches[name]; c != nil {
		tokenOK = step("token", func() (string, error) {
			tok, err := c.Token(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("valid until %s", tok.Expiry.Format(time.RFC3339)), nil
		})
	}
	if up := a.smtp[name]; up != nil && tokenOK {
		u := p.SMTP.Upstream
		loggedIn := step("smtp", func() (string, error) {
			if err := up.Check(ctx); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s (%s), %s as %s accepted", u.Host, u.TLS, loginName(u.Mechanism), a.upstreamAuth(p, u.Mechanism).User), nil
		})
		if loggedIn && sendTo != "" {
			step("send", func() (string, error) {
				if err := sendTestMessage(ctx, up, p.Mailbox, sendTo, name); err != nil {
					return "", err
				}
				return fmt.Sprintf("test message from %s to %s accepted upstream", p.Mailbox, sendTo), nil
			})
		}
	}
	if up := a.imap[name]; up != nil && tokenOK {
		u := p.IMAP.Upstream
		step("imap", func() (string, error) {
			n, err := up.Check(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s (%s), %s as %s accepted, INBOX has %d message(s)", u.Host, u.TLS, loginName(u.Mechanism), a.upstreamAuth(p, u.Mechanism).User, n), nil
		})
	}
	if up := a.pop3[name]; up != nil && tokenOK {
		u := p.POP3.Upstream
		step("pop3", func() (string, error) {
			n, err := up.Check(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s (%s), %s as %s accepted, STAT: %d message(s)", u.Host, u.TLS, loginName(u.Mechanism), a.upstreamAuth(p, u.Mechanism).User, n), nil
		})
	}
	return !failed
}

// loadApp loads the configuration for a one-off command and builds it,
// logging warnings to stderr. A non-empty profile must exist.
func loadApp(cfgFlag, profile string, stderr io.Writer) (*app, error) {
	cfg, err := config.Load(configPath(cfgFlag))
	if err != nil {
		return nil, err
	}
	if _, ok := cfg.Profiles[profile]; profile != "" && !ok {
		return nil, fmt.Errorf("no profile %q; profiles: %s", profile, strings.Join(cfg.ProfileNames(), ", "))
	}
	return build(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// loginName is how check names a login mechanism.
func loginName(mech string) string {
	if mech == upstream.MechLogin {
		return "password login"
	}
	return "AUTH " + strings.ToUpper(mech)
}

func sendTestMessage(ctx context.Context, up interface {
	Begin(context.Context, string, *smtp.MailOptions) (*upstream.SMTPTransaction, error)
}, from, to, profile string) error {
	t, err := up.Begin(ctx, from, nil)
	if err != nil {
		return err
	}
	if err := t.Rcpt(to, nil); err != nil {
		t.Abort()
		return err
	}
	now := time.Now()
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: mailproxy check %s\r\nDate: %s\r\nMessage-ID: <check-%d@mailproxy>\r\n\r\nThis message was sent by mailproxy check %s.\r\n",
		from, to, profile, now.Format(time.RFC1123Z), now.UnixNano(), profile)
	return t.Data(strings.NewReader(msg))
}
