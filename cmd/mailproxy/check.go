package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"mailproxy/app"
	"mailproxy/config"
)

// cmdCheck proves a profile works: it gets a token, logs in upstream and,
// with -send-to, sends a test message. It says what worked and what failed.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	sendTo := fs.String("send-to", "", "send a test message to this address")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return errUsage
	}
	name := fs.Arg(0)
	cfg, err := config.Load(configPath(*cfgPath))
	if err != nil {
		return err
	}
	a, err := loadApp(ctx, cfg, name, stderr)
	if err != nil {
		return err
	}
	defer closeApp(ctx, a, &err)
	if !a.Check(ctx, name, *sendTo, stdout) {
		return errors.New("check failed: see the FAIL lines above")
	}
	return nil
}

// loadApp builds cfg for a one-off command, logging warnings to stderr. A
// non-empty profile must exist.
func loadApp(ctx context.Context, cfg *config.Config, profile string, stderr io.Writer) (*app.App, error) {
	if _, ok := cfg.Profiles[profile]; profile != "" && !ok {
		return nil, fmt.Errorf("no profile %q; profiles: %s", profile, strings.Join(cfg.ProfileNames(), ", "))
	}
	return app.New(ctx, cfg, app.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
}

// closeApp saves what the command changed in the token store; if it cannot,
// that is the command's error.
func closeApp(ctx context.Context, a *app.App, err *error) {
	if cerr := a.Close(ctx); cerr != nil && *err == nil {
		*err = fmt.Errorf("%w: run the command again once the token store can be written", cerr)
	}
}
