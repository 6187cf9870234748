package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Serve binds every listener, the admin one included, and serves until
// ctx ends (or a listener fails); then it shuts down gracefully:
//   - every listener closes at once, so a new process can bind them all
//     while this one drains;
//   - logins under way, and sessions not moving a message or bytes, end
//     at once (their apps retry on the next process);
//   - messages in flight and relayed sessions moving bytes get
//     shutdown_grace to finish, then everything is closed;
//   - token requests under way are abandoned, and token store changes not
//     yet saved are saved if the store can be written.
func (a *App) Serve(ctx context.Context) error {
	bound := make([]net.Listener, 0, len(a.listeners))
	closeBound := func() {
		for _, l := range bound {
			l.Close()
		}
	}
	for _, l := range a.listeners {
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeBound()
			return fmt.Errorf("%s listener: %w", l.proto, err)
		}
		bound = append(bound, nl)
	}
	var adminL net.Listener
	if a.admin != nil {
		var err error
		if adminL, err = net.Listen("tcp", a.admin.Addr); err != nil {
			closeBound()
			return fmt.Errorf("admin listener: %w", err)
		}
	}

	run, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var background sync.WaitGroup
	if a.vault != nil {
		background.Go(func() { a.vault.Run(run) })
	}
	for _, c := range a.uniqueCredentials() {
		background.Go(func() { c.cache.Run(run) })
	}
	if a.webhook != nil {
		background.Go(func() { a.webhook.Run(run) })
	}

	errc := make(chan error, len(a.listeners)+1)
	var serving sync.WaitGroup
	for i, l := range a.listeners {
		serving.Go(func() {
			if err := l.srv.Serve(bound[i]); err != nil {
				errc <- fmt.Errorf("%s listener %s: %w", l.proto, l.addr, err)
			}
		})
	}
	if a.admin != nil {
		serving.Go(func() {
			var err error
			if a.admin.TLSConfig != nil {
				err = a.admin.ServeTLS(adminL, "", "")
			} else {
				err = a.admin.Serve(adminL)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin listener: %w", err)
			}
		})
	}
	for i, l := range a.listeners {
		a.log.Info("listening", "proto", l.proto, "addr", bound[i].Addr().String())
	}
	if adminL != nil {
		a.log.Info("listening", "proto", "admin", "addr", adminL.Addr().String())
	}
	a.ready.Store(true)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	a.ready.Store(false)
	grace := a.cfg.ShutdownGrace.D()
	if grace <= 0 {
		grace = shutdownGrace
	}
	a.log.Info("shutting down: finishing messages in flight", "grace", grace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	var stopping sync.WaitGroup
	if a.admin != nil {
		stopping.Go(func() {
			if a.admin.Shutdown(sctx) != nil {
				a.admin.Close()
			}
		})
	}
	for _, l := range a.listeners {
		stopping.Go(func() { l.srv.Shutdown(sctx) })
	}
	stopping.Wait()
	serving.Wait()
	a.closeGraph()
	for _, up := range a.smtp {
		up.Close()
	}
	for _, c := range a.uniqueCredentials() {
		c.cache.Close()
	}
	stopRun()
	background.Wait()
	if a.vault != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if ferr := a.vault.Close(fctx); ferr != nil {
			a.log.Error("token store changes lost at exit: a person may have to sign in again", "event", "store_changes_lost", "err", ferr)
		}
	}
	a.log.Info("stopped")
	return err
}

// shutdownGrace is shutdown_grace's default.
const shutdownGrace = 30 * time.Second
