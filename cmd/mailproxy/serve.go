package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"mailproxy/app"
	"mailproxy/config"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	// logrotate and systemctl reload send SIGHUP: it must never end the
	// process. Caught before anything else, so it cannot kill a start.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	cfg, err := config.Load(configPath(*cfgPath))
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Warn("SIGHUP ignored: this version does not reload its configuration; restart mailproxy to apply changes", "event", "sighup_ignored")
			}
		}
	}()
	return serve(ctx, cfg, log)
}

// serve runs every listener of cfg until ctx ends, then shuts down
// gracefully (app.App.Serve).
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	a, err := app.New(ctx, cfg, app.Options{Logger: log, Serving: true})
	if err != nil {
		return err
	}
	return a.Serve(ctx)
}
