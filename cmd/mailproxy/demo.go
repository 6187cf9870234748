package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"mailproxy/config"
	"mailproxy/demo"
)

// cmdDemo runs mailproxy in front of an in-process token issuer and an
// in-process upstream that accepts only XOAUTH2: the whole flow, no cloud
// account needed.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	smtpAddr := fs.String("smtp", "127.0.0.1:2525", "local SMTP listener")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	log := newLogger(stderr, config.Log{})
	env, err := demo.Start(log)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer env.Close()
	cfg, err := config.Parse([]byte(env.Config(*smtpAddr, "demo", "demo")))
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	fmt.Fprintf(stdout, `mailproxy demo: everything below runs in this process; no cloud account is needed.
  token issuer   %s (OAuth 2.0 client credentials)
  upstream SMTP  %s (accepts only AUTH XOAUTH2, keeps mail in memory)
  mailproxy SMTP %s (local login demo / demo)

Send a message through mailproxy:
  printf 'Subject: hello\r\n\r\nHello through mailproxy\r\n' | curl -sS smtp://%s --user demo:demo --mail-from app@example.com --mail-rcpt you@example.com -T -

Stop with Ctrl-C.
`, env.TokenURL, env.SMTPAddr, *smtpAddr, *smtpAddr)
	return serve(ctx, cfg, log)
}
