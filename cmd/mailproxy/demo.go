package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"mailproxy/app"
	"mailproxy/config"
	"mailproxy/demo"
)

// cmdDemo runs mailproxy in front of an in-process token issuer and
// in-process SMTP, IMAP and POP3 upstreams that accept only XOAUTH2: the
// whole flow, no cloud account needed.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The demo's configuration is built in memory: a SIGHUP has nothing
	// to reload, and must not end it either.
	signal.Ignore(syscall.SIGHUP)
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	smtpAddr := fs.String("smtp", "127.0.0.1:2525", "local SMTP listener")
	imapAddr := fs.String("imap", "127.0.0.1:1143", "local IMAP listener")
	pop3Addr := fs.String("pop3", "127.0.0.1:1110", "local POP3 listener")
	adminAddr := fs.String("admin", "127.0.0.1:8025", "admin page")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	log := newLogger(stderr, config.Log{})
	env, err := demo.Start(log)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer env.Close()
	dir, err := os.MkdirTemp("", "mailproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l := demo.Listeners{SMTP: *smtpAddr, IMAP: *imapAddr, POP3: *pop3Addr, Admin: *adminAddr}
	cfg, err := config.Parse([]byte(env.Config(l, filepath.Join(dir, "tokens.enc"), "demo", "demo")))
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	fmt.Fprintf(stdout, `mailproxy demo: everything below runs in this process; no cloud account is needed.
  token issuer        %s (OAuth 2.0: client credentials, and a sign-in page)
  upstream SMTP/IMAP/POP3  %s, %s, %s (accept only XOAUTH2; one mailbox in memory)
  mailproxy SMTP %s, IMAP %s, POP3 %s (local login demo / demo)

Send a message through mailproxy:
  printf 'Subject: hello\r\n\r\nHello through mailproxy\r\n' | curl -sS smtp://%s --user demo:demo --mail-from app@example.com --mail-rcpt you@example.com -T -
Read it back over IMAP, then over POP3:
  curl -sS 'imap://%s/INBOX;UID=1' --user demo:demo
  curl -sS pop3://%s/1 --user demo:demo

A mailbox a person grants once (as a Microsoft public app or Gmail needs): open the admin
page http://%s/ (user demo, password demo), press "Get token" for profile signed-in and
sign in as %s with password %s. Then read with that grant:
  curl -sS 'imap://%s/INBOX;UID=1' --user person:demo

Microsoft 365 through Graph (a tenant with SMTP AUTH, IMAP and POP off): profile m365, on
the same ports as local user m365, sends with Graph's sendMail and serves the Graph
mailbox over IMAP and POP3 (the Graph double at %s):
  printf 'Subject: via Graph\r\n\r\nHello through Graph\r\n' | curl -sS smtp://%s --user m365:demo --mail-from %s --mail-rcpt %s -T -
  curl -sS 'imap://%s/INBOX;UID=1' --user m365:demo
  curl -sS pop3://%s/1 --user m365:demo

Stop with Ctrl-C.
`, env.TokenURL, env.SMTPAddr, env.IMAPAddr, env.POP3Addr, *smtpAddr, *imapAddr, *pop3Addr, *smtpAddr, *imapAddr, *pop3Addr,
		*adminAddr, demo.Mailbox, demo.PersonPassword, *imapAddr,
		env.GraphURL, *smtpAddr, demo.GraphMailbox, demo.GraphMailbox, *imapAddr, *pop3Addr)
	return serve(ctx, cfg, log, app.ServeOptions{})
}
