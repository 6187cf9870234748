package app

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"mailproxy/proxy"
	"mailproxy/upstream"
	"mailproxy/upstream/graph/mirror"
)

// Check proves profile name works: it gets a token, logs in to each of its
// upstreams (IMAP also selects INBOX, POP3 asks STAT) and, with sendTo,
// sends a test message. It writes a line per step and reports whether all
// worked. mailproxy check and the admin page's Test button run it.
func (a *App) Check(ctx context.Context, name, sendTo string, w io.Writer) bool {
	p := a.cfg.Profiles[name]
	if p == nil {
		fmt.Fprintf(w, "no profile %q\n", name)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	failed := false
	step := func(what string, f func() (string, error)) bool {
		detail, err := f()
		if err != nil {
			failed = true
			fmt.Fprintf(w, "  %-6s FAIL  %v\n", what, err)
			return false
		}
		fmt.Fprintf(w, "  %-6s ok    %s\n", what, detail)
		return true
	}
	fmt.Fprintf(w, "profile %q: credentials %s, mailbox %s\n", name, p.Credentials.Type, p.Mailbox)
	tokenOK := true
	if c := a.creds[name]; c != nil {
		tokenOK = step("token", func() (string, error) {
			tok, err := c.cache.Token(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("valid until %s", tok.Expiry.Format(time.RFC3339)), nil
		})
	}
	if gp := a.graph[name]; gp != nil && tokenOK {
		where := "/users/" + p.Graph.User + " (app-only)"
		if p.Credentials.Delegated() {
			where = "/me (" + p.Credentials.Account + ", delegated)"
		}
		reached := step("graph", func() (string, error) {
			f, err := gp.client.Folder(ctx, "inbox")
			if err != nil {
				return "", gp.client.Classify(err)
			}
			return fmt.Sprintf("%s%s: Inbox has %d message(s)", p.Graph.Endpoint, where, f.Total), nil
		})
		if reached && gp.imap != nil {
			step("imap", func() (string, error) {
				tree, err := mirror.WalkTree(ctx, gp.client)
				if err != nil {
					return "", gp.client.Classify(err)
				}
				var names []string
				inbox := 0
				for _, f := range tree {
					names = append(names, f.Name)
					if f.Name == "INBOX" {
						inbox = f.Total
					}
				}
				return fmt.Sprintf("served by mailproxy over Graph: %d folder(s) (%s), INBOX has %d message(s); UIDs kept in %s",
					len(tree), strings.Join(names, ", "), inbox, p.Graph.StateDir), nil
			})
		}
		if reached && sendTo != "" && gp.sender != nil {
			step("send", func() (string, error) {
				if err := sendTestMessage(ctx, graphSender{gp.sender}, p.Mailbox, sendTo, name); err != nil {
					return "", err
				}
				return fmt.Sprintf("test message from %s to %s accepted by Graph (sendMail)", p.Mailbox, sendTo), nil
			})
		}
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
				if err := sendTestMessage(ctx, smtpSender{up}, p.Mailbox, sendTo, name); err != nil {
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

// loginName is how check names a login mechanism.
func loginName(mech string) string {
	if mech == upstream.MechLogin {
		return "password login"
	}
	return "AUTH " + strings.ToUpper(mech)
}

func sendTestMessage(ctx context.Context, up proxy.Sender, from, to, profile string) error {
	t, err := up.Begin(ctx, from, nil)
	if err != nil {
		return err
	}
	if err := t.Rcpt(ctx, to, nil); err != nil {
		t.Abort()
		return err
	}
	now := time.Now()
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: mailproxy check %s\r\nDate: %s\r\nMessage-ID: <check-%d@mailproxy>\r\n\r\nThis message was sent by mailproxy check %s.\r\n",
		from, to, profile, now.Format(time.RFC1123Z), now.UnixNano(), profile)
	return t.Data(ctx, strings.NewReader(msg))
}
