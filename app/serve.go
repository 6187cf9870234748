package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"mailproxy/config"
)

// ServeOptions tune Serve.
type ServeOptions struct {
	// Load reads the configuration file again, for a reload (nil: the
	// process has no file to reload, as the demo).
	Load func() (*config.Config, error)
	// Reload asks for a reload (SIGHUP); POST /reload on the admin server
	// asks too.
	Reload <-chan struct{}
	// Reloaded is told of every configuration put in force by a reload.
	Reloaded func(*config.Config)
}

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
//
// A reload builds a new App from the file, taking over what did not
// change (the token store, token caches, Graph mirrors, metrics), and puts
// it in force for new sessions: listeners it keeps go on accepting,
// without a moment closed, for the new App's servers; listeners it drops
// close, new ones open; sessions under way finish on the App they began
// with. A file that does not build is refused with every reason, and the
// App in force stays (the log, /readyz and mailproxy_config_last_reload_failed
// say so).
func (a *App) Serve(ctx context.Context, so ServeOptions) error {
	p := &process{cur: a, log: a.log, so: so, ports: map[string]*port{}, errc: make(chan error, 16), runs: map[*credential]context.CancelFunc{}}
	for _, l := range a.listeners {
		if err := p.open(l); err != nil {
			p.closePorts()
			return err
		}
	}
	if a.admin != nil {
		if err := p.openAdmin(a); err != nil {
			p.closePorts()
			return err
		}
	}
	p.runCtx, p.stopRun = context.WithCancel(context.WithoutCancel(ctx))
	defer p.stopRun()
	if a.vault != nil {
		p.background.Go(func() { a.vault.Run(p.runCtx) })
	}
	p.background.Go(func() { a.webhook.Run(p.runCtx) })
	p.startRuns(a)
	for _, l := range a.listeners {
		p.serve(l)
	}
	if so.Load != nil {
		a.shared.mu.Lock()
		a.reload = func(ctx context.Context) error { return p.reload(ctx) }
		a.shared.mu.Unlock()
	}
	for addr, pt := range p.ports {
		a.log.Info("listening", "proto", pt.proto, "addr", addr)
	}
	if p.admin != nil {
		a.log.Info("listening", "proto", "admin", "addr", p.adminAddr)
	}
	a.ready.Store(true)

	var err error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err = <-p.errc:
			done = true
		case <-so.Reload:
			p.reload(ctx)
		}
	}
	return p.shutdown(ctx, err)
}

// process is a running mailproxy: the App in force, the ones reloads
// replaced (whose sessions may still run), and the bound listeners.
type process struct {
	log *slog.Logger
	so  ServeOptions

	mu      sync.Mutex // one reload at a time; cur, retired, ports
	cur     *App
	retired []*App
	ports   map[string]*port // by listen address

	admin     *http.Server
	adminAddr string
	adminKey  string

	runCtx     context.Context
	stopRun    context.CancelFunc
	runs       map[*credential]context.CancelFunc // token caches kept fresh
	background sync.WaitGroup
	serving    sync.WaitGroup
	errc       chan error
}

// port is a bound listen address. One goroutine accepts on it and hands
// each connection to the server in force, so that a reload swaps servers
// without closing the socket.
type port struct {
	l     net.Listener
	proto string
	key   string // what a reload cannot change in place: protocol and TLS

	mu sync.Mutex
	to *handoff
}

// handoff is a server's listener: connections its port hands it.
type handoff struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }

// give hands c to the server, or reports that it stopped accepting.
func (h *handoff) give(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

// listenerKey is what a reload must not change on a bound address.
func listenerKey(l *listener) string {
	k := l.proto
	if t := l.cfg.TLS; t != nil {
		k += "\x00" + t.Mode + "\x00" + t.CertFile + "\x00" + t.KeyFile
	}
	return k
}

// open binds a listener of the App.
func (p *process) open(l *listener) error {
	nl, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", l.proto, err)
	}
	pt := &port{l: nl, proto: l.proto, key: listenerKey(l)}
	p.ports[l.addr] = pt
	go pt.accept()
	return nil
}

// accept hands connections to the server in force until the socket
// closes.
func (pt *port) accept() {
	for {
		c, err := pt.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // the servers' guard logs and paces accept errors
			continue
		}
		for {
			pt.mu.Lock()
			to := pt.to
			pt.mu.Unlock()
			if to == nil {
				c.Close()
				break
			}
			if to.give(c) {
				break
			}
			// Replaced while handing over: give it to the new server.
			pt.mu.Lock()
			same := pt.to == to
			pt.mu.Unlock()
			if same {
				c.Close()
				break
			}
		}
	}
}

// serve starts l's server on its port's handoff.
func (p *process) serve(l *listener) {
	pt := p.ports[l.addr]
	h := newHandoff(pt.l.Addr())
	pt.mu.Lock()
	old := pt.to
	pt.to = h
	pt.mu.Unlock()
	if old != nil {
		old.Close()
	}
	p.serving.Go(func() {
		err := l.srv.Serve(h)
		select {
		case <-h.done: // replaced by a reload, or shutting down
		default:
			if err != nil {
				p.errc <- fmt.Errorf("%s listener %s: %w", l.proto, l.addr, err)
			}
		}
	})
}

// closePorts closes every bound socket and stops handing connections.
func (p *process) closePorts() {
	for _, pt := range p.ports {
		pt.l.Close()
		pt.mu.Lock()
		if pt.to != nil {
			pt.to.Close()
		}
		pt.mu.Unlock()
	}
	if p.admin != nil {
		p.admin.Close()
	}
}

// openAdmin binds the admin server of a.
func (p *process) openAdmin(a *App) error {
	nl, err := net.Listen("tcp", a.admin.Addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	srv := a.admin
	p.admin, p.adminAddr, p.adminKey = srv, nl.Addr().String(), adminKey(a.cfg)
	p.serving.Go(func() {
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(nl, "", "")
		} else {
			err = srv.Serve(nl)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			p.errc <- fmt.Errorf("admin listener: %w", err)
		}
	})
	return nil
}

// adminKey is what a reload cannot change on the admin server's socket.
func adminKey(cfg *config.Config) string {
	c := cfg.Admin
	if c == nil {
		return ""
	}
	k := c.Listen
	if t := c.TLS; t != nil {
		k += "\x00" + t.CertFile + "\x00" + t.KeyFile
	}
	return k
}

// startRuns keeps a's token caches fresh, and stops keeping those it no
// longer uses (they still answer, for sessions that began before).
func (p *process) startRuns(a *App) {
	used := map[*credential]bool{}
	for _, c := range a.uniqueCredentials() {
		used[c] = true
		if p.runs[c] == nil {
			ctx, cancel := context.WithCancel(p.runCtx)
			p.runs[c] = cancel
			p.background.Go(func() { c.cache.Run(ctx) })
		}
	}
	for c, cancel := range p.runs {
		if !used[c] {
			cancel()
			delete(p.runs, c)
		}
	}
}

// reload reads the file again and puts it in force, or refuses it.
func (p *process) reload(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.cur
	cfg, err := p.so.Load()
	var next *App
	if err == nil {
		next, err = New(ctx, cfg, Options{Logger: cur.log, Serving: true, Prev: cur})
	}
	if err == nil {
		err = p.bind(next)
	}
	if err != nil {
		reasons := strings.Split(err.Error(), "\n")
		p.log.Error("reload refused: the configuration in force stays", "event", "reload_failed", "problems", len(reasons), "err", err)
		cur.metrics.Reloaded(false)
		cur.shared.mu.Lock()
		cur.reloadProblem = strings.Join(reasons, "; ")
		cur.shared.mu.Unlock()
		return err
	}
	next.takeOver()
	added, removed := p.swap(next)
	p.retired = append(p.retired, cur)
	p.cur = next
	p.startRuns(next)
	next.ready.Store(true)
	cur.metrics.Reloaded(true)
	cur.shared.mu.Lock()
	cur.reloadProblem = ""
	cur.shared.mu.Unlock()
	// The replaced App's idle upstream SMTP sessions go; its sessions
	// under way finish (a retired upstream still connects, without a pool).
	for _, up := range cur.smtp {
		go up.Close()
	}
	// Logged before the new log level applies, so that it is seen.
	p.log.Info("reloaded", "event", "reloaded", "profiles", len(cfg.Profiles), "listeners_added", added, "listeners_removed", removed)
	if p.so.Reloaded != nil {
		p.so.Reloaded(cfg)
	}
	return nil
}

// bind opens the addresses next adds, before anything changes, so that a
// port in use refuses the reload and leaves the App in force as it was.
func (p *process) bind(next *App) error {
	var errs []error
	var opened []string
	for _, l := range next.listeners {
		if pt := p.ports[l.addr]; pt != nil && pt.key == listenerKey(l) {
			continue
		}
		if p.ports[l.addr] != nil {
			continue // the same address with another protocol or TLS: swapped in swap
		}
		if err := p.open(l); err != nil {
			errs = append(errs, err)
			continue
		}
		opened = append(opened, l.addr)
	}
	if next.admin != nil && adminKey(next.cfg) != p.adminKey && (p.admin == nil || next.admin.Addr != p.admin.Addr) {
		ln, err := net.Listen("tcp", next.admin.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("admin listener: %w", err))
		} else {
			ln.Close() // checked free; bound in swap
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, addr := range opened {
			p.ports[addr].l.Close()
			delete(p.ports, addr)
		}
		return err
	}
	return nil
}

// swap gives every bound address to next's server for it, closes the
// addresses next dropped, and moves the admin server if next moved it.
func (p *process) swap(next *App) (added, removed []string) {
	want := map[string]*listener{}
	for _, l := range next.listeners {
		want[l.addr] = l
	}
	for addr, pt := range p.ports {
		l := want[addr]
		if l != nil && pt.key == listenerKey(l) {
			continue
		}
		// Dropped, or changed in protocol or TLS: closed here, opened
		// again below for next.
		pt.l.Close()
		pt.mu.Lock()
		if pt.to != nil {
			pt.to.Close()
		}
		pt.to = nil
		pt.mu.Unlock()
		delete(p.ports, addr)
		if l == nil {
			removed = append(removed, addr)
		}
	}
	for _, l := range next.listeners {
		if p.ports[l.addr] == nil {
			if err := p.open(l); err != nil {
				p.log.Error("reload: a listener could not be opened again", "proto", l.proto, "addr", l.addr, "err", err)
				continue
			}
			if !slices.ContainsFunc(p.cur.listeners, func(o *listener) bool { return o.addr == l.addr }) {
				added = append(added, l.addr)
			}
		}
		p.serve(l)
	}
	if k := adminKey(next.cfg); k != p.adminKey {
		if p.admin != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			p.admin.Shutdown(sctx)
			cancel()
			p.admin, p.adminKey = nil, ""
		}
		if next.admin != nil {
			if err := p.openAdmin(next); err != nil {
				p.log.Error("reload: the admin listener could not be opened", "err", err)
			}
		}
	}
	return added, removed
}

// shutdown stops every App, the one in force and those reloads replaced.
func (p *process) shutdown(ctx context.Context, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.cur
	a.ready.Store(false)
	grace := a.cfg.ShutdownGrace.D()
	if grace <= 0 {
		grace = shutdownGrace
	}
	a.log.Info("shutting down: finishing messages in flight", "grace", grace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	for _, pt := range p.ports {
		pt.l.Close()
	}
	var stopping sync.WaitGroup
	if p.admin != nil {
		admin := p.admin
		stopping.Go(func() {
			if admin.Shutdown(sctx) != nil {
				admin.Close()
			}
		})
	}
	apps := append(slices.Clone(p.retired), a)
	for _, app := range apps {
		for _, l := range app.listeners {
			stopping.Go(func() { l.srv.Shutdown(sctx) })
		}
	}
	stopping.Wait()
	p.serving.Wait()
	for _, app := range apps {
		app.closeGraph()
		for _, up := range app.smtp {
			up.Close()
		}
	}
	for _, c := range a.shared.creds {
		c.cache.Close()
	}
	p.stopRun()
	p.background.Wait()
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
