package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	adm, err := a.adminServer()
	if err != nil {
		return err
	}
	servers, err := a.servers()
	if err != nil {
		return err
	}
	listeners := map[string]net.Listener{}
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for addr, spec := range servers {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("%s listener: %w", spec.proto, err)
		}
		listeners[addr] = l
	}
	var adminL net.Listener
	if adm != nil {
		if adminL, err = net.Listen("tcp", adm.Addr); err != nil {
			closeAll()
			return fmt.Errorf("admin listener: %w", err)
		}
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var wg sync.WaitGroup
	for _, c := range uniqueCaches(a) {
		wg.Go(func() { c.Run(runCtx) })
	}
	errc := make(chan error, len(servers)+1)
	addrs := make([]string, 0, len(servers))
	for addr, spec := range servers {
		addrs = append(addrs, addr)
		go func() { errc <- spec.srv.Serve(listeners[addr]) }()
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		log.Info("listening", "proto", servers[addr].proto, "addr", listeners[addr].Addr().String())
	}
	if adm != nil {
		go func() {
			var err error
			if adm.TLSConfig != nil {
				err = adm.ServeTLS(adminL, "", "")
			} else {
				err = adm.Serve(adminL)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin listener: %w", err)
			}
		}()
		log.Info("listening", "proto", "admin", "addr", adminL.Addr().String())
	}
	a.ready.Store(true)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	a.ready.Store(false)
	log.Info("shutting down: finishing messages in flight", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	var swg sync.WaitGroup
	for _, spec := range servers {
		swg.Go(func() { spec.srv.Shutdown(sctx) })
	}
	swg.Wait()
	if adm != nil {
		adm.Close()
	}
	for _, up := range a.smtp {
		up.Close()
	}
	cancelRun()
	wg.Wait()
	log.Info("stopped")
	return err
}
