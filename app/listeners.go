package app

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/emersion/go-smtp"

	"mailproxy/config"
	"mailproxy/proxy"
	"mailproxy/upstream"
)

// localServer is a local listener of any protocol.
type localServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// listener is one local address: its protocol, settings and server.
type listener struct {
	addr  string
	proto string
	cfg   config.Listener
	srv   localServer
}

// buildListeners groups profiles by listen address: one server per
// address, the login name picking the profile where several share it
// (config checks that an address has one protocol and one TLS setting).
func (a *App) buildListeners() error {
	type group struct {
		proto string
		l     config.Listener
		smtp  []proxy.SMTPProfile
		imap  []proxy.IMAPProfile
		pop3  []proxy.POP3Profile
		max   int64
	}
	groups := map[string]*group{}
	var order []string
	for _, name := range a.cfg.ProfileNames() {
		p := a.cfg.Profiles[name]
		var users []proxy.LocalUser
		for _, u := range p.LocalUsers {
			users = append(users, proxy.LocalUser{Name: u.Name, Username: u.Username, Password: u.Password.Value()})
		}
		for _, ln := range p.Listeners() {
			g := groups[ln.Listen]
			if g == nil {
				g = &group{proto: ln.Proto, l: ln.Listener}
				groups[ln.Listen] = g
				order = append(order, ln.Listen)
			}
			switch ln.Proto {
			case "smtp":
				var sender proxy.Sender
				if gp := a.graph[name]; gp != nil {
					sender = graphSender{gp.sender}
				} else if up := a.smtp[name]; up != nil {
					sender = smtpSender{up}
				} else {
					continue // its problem is reported already
				}
				sp := proxy.SMTPProfile{Name: name, Sender: sender}
				if p.SMTP.LocalAuth == config.LocalAuthPassword {
					sp.Users = users
				}
				g.smtp = append(g.smtp, sp)
				g.max = max(g.max, p.SMTP.MaxMessageBytes)
			case "imap":
				if gp := a.graph[name]; gp != nil {
					g.imap = append(g.imap, proxy.IMAPProfile{Name: name, Backend: gp.imap, Users: users})
				} else if up := a.imap[name]; up != nil {
					g.imap = append(g.imap, proxy.IMAPProfile{Name: name, Backend: proxy.RelayIMAP{Upstream: up}, Users: users})
				}
			case "pop3":
				if gp := a.graph[name]; gp != nil {
					g.pop3 = append(g.pop3, proxy.POP3Profile{Name: name, Backend: proxy.ServePOP3{Drop: graphDrop{gp.drop}}, Users: users})
				} else if up := a.pop3[name]; up != nil {
					g.pop3 = append(g.pop3, proxy.POP3Profile{Name: name, Backend: proxy.RelayPOP3{Upstream: up}, Users: users})
				}
			}
		}
	}
	logins := a.logins[a.cfg.Limits.FailedLogins]
	if logins == nil {
		// Kept across reloads: a reload does not give guessers a new budget.
		logins = proxy.NewLoginGuard(a.cfg.Limits.FailedLogins)
		a.logins[a.cfg.Limits.FailedLogins] = logins
	}
	limits := proxy.Limits{
		MaxConns:      connectionCap(a.cfg.Limits.Connections, len(groups)),
		MaxPerAddress: a.cfg.Limits.ConnectionsPerAddress,
		LoginTimeout:  a.cfg.Limits.LoginTimeout.D(),
		Logins:        logins,
	}
	var errs []error
	for _, addr := range order {
		g := groups[addr]
		tc, err := serverTLS(g.l.TLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s listener %s: tls: %w", g.proto, addr, err))
			continue
		}
		implicit := g.l.TLS != nil && g.l.TLS.Mode == config.TLSImplicit
		mo := proxy.MailboxOptions{TLSConfig: tc, ImplicitTLS: implicit, RequireTLS: g.l.RequiresTLS(), Limits: limits, Logger: a.log, Observer: a.observer()}
		var srv localServer
		switch g.proto {
		case "smtp":
			srv = proxy.NewSMTPServer(proxy.SMTPOptions{
				Profiles: g.smtp, TLSConfig: tc, ImplicitTLS: implicit, RequireTLS: g.l.RequiresTLS(),
				MaxMessageBytes: g.max, Limits: limits, Logger: a.log, Observer: a.observer(),
			})
		case "imap":
			srv = proxy.NewIMAPServer(g.imap, mo)
		case "pop3":
			srv = proxy.NewPOP3Server(g.pop3, mo)
		}
		a.listeners = append(a.listeners, &listener{addr: addr, proto: g.proto, cfg: g.l, srv: srv})
	}
	return errors.Join(errs...)
}

// fdReserve is the descriptors kept for everything but client sessions:
// token and admin requests, the store, logs, listeners.
const fdReserve = 64

// connectionCap is how many connections each of n listeners takes at once:
// the configured number, or a share of the open-file limit, each session
// needing two descriptors (the client's and the upstream's), so that one
// protocol's flood leaves the others their share.
func connectionCap(configured, n int) int {
	if configured > 0 {
		return configured
	}
	if n == 0 {
		return 0
	}
	limit := openFileLimit()
	return max((limit-fdReserve-4*n)/2/n, 16)
}

// smtpSender adapts upstream.SMTP to proxy.Sender.
type smtpSender struct{ up *upstream.SMTP }

func (s smtpSender) Begin(ctx context.Context, from string, opts *smtp.MailOptions) (proxy.Transaction, error) {
	t, err := s.up.Begin(ctx, from, opts)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return t, nil
}
