// Command mailproxy lets apps that speak plain SMTP, IMAP or POP3 with a
// password keep sending and reading mail on servers that accept only
// OAuth 2.0.
//
// This package only parses the command line and wires the other packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"mailproxy/config"
	"mailproxy/tokens"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `mailproxy — a local SMTP, IMAP and POP3 proxy that logs in upstream with OAuth 2.0

Usage:
  mailproxy demo [-smtp ADDR] [-imap ADDR] [-pop3 ADDR] [-admin ADDR]
                                              run everything in-process, no cloud account needed
  mailproxy serve [-config FILE]              run the profiles in FILE
  mailproxy check [-config FILE] [-send-to ADDR] PROFILE
                                              get a token, log in to each upstream (SMTP, IMAP: SELECT
                                              INBOX, POP3: STAT), optionally send a test message
  mailproxy config validate [-config FILE]    check FILE and list every problem
  mailproxy config show [-config FILE] [PROFILE]
                                              each profile as in force (inheritance, defaults),
                                              where each value comes from, inline secrets masked
  mailproxy config import-cmo [-o FILE] [-env FILE] WEBCONFIG   a configuration from a CMO web.config
  mailproxy token add [-config FILE] [-device|-browser|-paste] [-account A] PROFILE
                                              sign a person in once for a delegated profile (asks to
                                              add more accounts); device code by default where offered
  mailproxy token list [-config FILE]         accounts in the token store: provider, scopes, expiry,
                                              last refresh, last error (never a token)
  mailproxy token remove [-config FILE] [-account A] PROFILE
                                              forget an account's grant
  mailproxy key generate                      print a new token store key
  mailproxy service install [-config FILE] [-log FILE] | uninstall | start | stop
                                              Windows: serve as the Windows service "mailproxy" (FILE:
                                              $MAILPROXY_CONFIG, then %ProgramData%\mailproxy\mailproxy.yaml)
  mailproxy version

FILE defaults to $MAILPROXY_CONFIG, then ./mailproxy.yaml.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// errUsage makes run print the usage and exit 2.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(ctx, args[1:], stdout, stderr)
	case "token":
		err = cmdToken(ctx, args[1:], stdin, stdout, stderr)
	case "config":
		err = cmdConfig(ctx, args[1:], stdout, stderr)
	case "service":
		err = cmdService(ctx, args[1:], stdout)
	case "key":
		if len(args) == 2 && args[1] == "generate" {
			err = cmdKeyGenerate(stdout)
		} else {
			err = errUsage
		}
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "mailproxy", version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = errUsage
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprint(stderr, usage)
		return 2
	default:
		fmt.Fprintln(stderr, "mailproxy:", err)
		return 1
	}
}

func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("MAILPROXY_CONFIG"); p != "" {
		return p
	}
	return "mailproxy.yaml"
}

func newLogger(w io.Writer, l config.Log) *slog.Logger {
	level := &slog.LevelVar{}
	level.Set(logLevel(l))
	return newLoggerAt(w, l, level)
}

// newLoggerAt logs at level, which a reload may change.
func newLoggerAt(w io.Writer, l config.Log, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func logLevel(l config.Log) slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func cmdKeyGenerate(w io.Writer) error {
	_, err := fmt.Fprintln(w, tokens.NewKey())
	return err
}
