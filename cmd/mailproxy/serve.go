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
	// logrotate and systemctl reload send SIGHUP: a reload, never the
	// end of the process. Caught before anything else, so it cannot kill
	// a start.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	path := configPath(*cfgPath)
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	level := &slog.LevelVar{}
	level.Set(logLevel(cfg.Log))
	log := newLoggerAt(stderr, cfg.Log, level)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the configuration", "event", "sighup", "config", path)
				select {
				case reload <- struct{}{}:
				default: // one is pending already
				}
			}
		}
	}()
	return serve(ctx, cfg, log, app.ServeOptions{
		Load:     func() (*config.Config, error) { return config.Load(path) },
		Reload:   reload,
		Reloaded: func(c *config.Config) { level.Set(logLevel(c.Log)) },
	})
}

// serve runs every listener of cfg until ctx ends, then shuts down
// gracefully (app.App.Serve).
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, so app.ServeOptions) error {
	a, err := app.New(ctx, cfg, app.Options{Logger: log, Serving: true})
	if err != nil {
		return err
	}
	return a.Serve(ctx, so)
}
