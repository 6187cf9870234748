package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"mailproxy/config"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	cfg, err := config.Load(configPath(*cfgPath))
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(stderr, cfg.Log))
}

// shutdownGrace is how long messages in flight (and IMAP/POP3 sessions
// moving bytes) may take to finish after SIGTERM before their connections
// are closed; quiet IMAP/POP3 sessions are closed at once.
const shutdownGrace = 30 * time.Second

// serve runs every listener of cfg until ctx ends, then shuts down
// gracefully: no new connections, messages in flight finished.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	a, err := build(cfg, log)
	if err != nil {
		return err
	}
	servers, err := a.servers()
	if err != nil {
		return err
	}
	listeners := map[string]net.Listener{}
	for addr, spec := range servers {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("%s listener: %w", spec.proto, err)
		}
		listeners[addr] = l
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var wg sync.WaitGroup
	for _, c := range uniqueCaches(a) {
		wg.Go(func() { c.Run(runCtx) })
	}
	errc := make(chan error, len(servers))
	addrs := make([]string, 0, len(servers))
	for addr, spec := range servers {
		addrs = append(addrs, addr)
		go func() { errc <- spec.srv.Serve(listeners[addr]) }()
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		log.Info("listening", "proto", servers[addr].proto, "addr", listeners[addr].Addr().String())
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("shutting down: finishing messages in flight", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	var swg sync.WaitGroup
	for _, spec := range servers {
		swg.Go(func() { spec.srv.Shutdown(sctx) })
	}
	swg.Wait()
	for _, up := range a.smtp {
		up.Close()
	}
	cancelRun()
	wg.Wait()
	log.Info("stopped")
	return err
}
