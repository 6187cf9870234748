package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mailproxy/config"
	"mailproxy/proxy"
	"mailproxy/tokens"
	"mailproxy/upstream"
)

// app is everything built from a configuration.
type app struct {
	cfg    *config.Config
	log    *slog.Logger
	store  *tokens.Store
	caches map[string]*tokens.Cache // by profile; profiles with equal credentials share one
	// delegated are the credentials a person signs in to, by profile.
	delegated map[string]tokens.Delegated
	// onNeedsSignIn is told when a credential starts needing a person.
	onNeedsSignIn func(*tokens.Error)
	// observer counts what sessions do (the admin server's metrics).
	observer proxy.Observer
	// ready is set while every listener is up.
	ready atomic.Bool
	// msApps are the Microsoft public apps, one MSAL client each.
	msApps map[string]*tokens.MicrosoftApp
	smtp   map[string]*upstream.SMTP
	imap   map[string]*upstream.IMAP
	pop3   map[string]*upstream.POP3
}

// build turns the configuration into token caches and upstreams. It opens no
// listener and makes no network call.
func build(cfg *config.Config, log *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, caches: map[string]*tokens.Cache{}, delegated: map[string]tokens.Delegated{}, msApps: map[string]*tokens.MicrosoftApp{},
		smtp: map[string]*upstream.SMTP{}, imap: map[string]*upstream.IMAP{}, pop3: map[string]*upstream.POP3{}}
	if ts := cfg.TokenStore; ts != nil {
		key, err := tokens.ParseKey(ts.Key.Value())
		if err != nil {
			return nil, fmt.Errorf("token_store.key: %w", err)
		}
		if a.store, err = tokens.OpenStore(ts.Path, key); err != nil {
			return nil, err
		}
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	type sharedCred struct {
		cache *tokens.Cache
		d     tokens.Delegated
	}
	shared := map[string]sharedCred{}
	for _, name := range cfg.ProfileNames() {
		p := cfg.Profiles[name]
		if p.Credentials.UsesTokens() {
			key := credentialKey(p)
			sc, ok := shared[key]
			if !ok {
				f, err := a.fetcher(p, hc)
				if err != nil {
					return nil, fmt.Errorf("profile %q: credentials: %w", name, err)
				}
				opts := tokens.CacheOptions{Logger: log, OnNeedsSignIn: func(e *tokens.Error) {
					if a.onNeedsSignIn != nil {
						a.onNeedsSignIn(e)
					}
				}}
				if d, ok := f.(tokens.Delegated); ok {
					sc.d = d
					opts.Generation = a.store.Generation
					opts.Fix = "a person must sign in: run mailproxy token add " + name
					if cfg.Admin != nil {
						opts.Fix += ", or press Get token on the admin page"
					}
				}
				sc.cache = tokens.NewCache(name, f, opts)
				shared[key] = sc
			}
			a.caches[name] = sc.cache
			if sc.d != nil {
				a.delegated[name] = sc.d
			}
		}
		if s := p.SMTP; s != nil {
			up, err := a.smtpUpstream(p)
			if err != nil {
				return nil, err
			}
			a.smtp[name] = up
		}
		if r := p.IMAP; r != nil {
			o, err := a.mailboxOptions(p, "imap", r.Upstream)
			if err != nil {
				return nil, err
			}
			a.imap[name] = upstream.NewIMAP(o)
		}
		if r := p.POP3; r != nil {
			o, err := a.mailboxOptions(p, "pop3", r.Upstream)
			if err != nil {
				return nil, err
			}
			a.pop3[name] = upstream.NewPOP3(o)
		}
	}
	return a, nil
}

// credentialKey identifies a credential so that profiles using the same one
// share a token cache (and so one token request).
func credentialKey(p *config.Profile) string {
	c := p.Credentials
	account := ""
	if c.Delegated() {
		account = c.Account
	}
	return strings.Join([]string{c.Type, c.App, c.Authority, c.TenantID, c.ClientID, c.CertificateFile,
		c.KeyFile, c.ServiceAccount, c.Impersonate, c.TokenURL, c.Grant,
		strings.Join(c.Scopes, " "), account}, "\x00")
}

func (a *app) fetcher(p *config.Profile, hc *http.Client) (tokens.Fetcher, error) {
	c := p.Credentials
	switch c.Type {
	case config.CredMicrosoft365:
		if c.App == config.AppPublic {
			key := c.Authority + "\x00" + c.TenantID + "\x00" + c.ClientID
			msApp := a.msApps[key]
			if msApp == nil {
				var err error
				if msApp, err = tokens.NewMicrosoftApp(c.Authority, c.TenantID, c.ClientID, a.store, hc); err != nil {
					return nil, err
				}
				a.msApps[key] = msApp
			}
			return msApp.For(c.Account, c.Scopes), nil
		}
		return tokens.NewMicrosoftConfidential(tokens.MicrosoftConfidential{
			Authority: c.Authority, TenantID: c.TenantID, ClientID: c.ClientID,
			Secret: c.ClientSecret.Value(), CertFile: c.CertificateFile, CertPassword: c.CertificatePassword.Value(),
			Scopes: c.Scopes, HTTPClient: hc,
		})
	case config.CredGoogleServiceAccount:
		return tokens.NewGoogleServiceAccount(tokens.GoogleServiceAccount{
			KeyFile: c.KeyFile, Email: c.ServiceAccount, Subject: c.Impersonate,
			Scopes: c.Scopes, TokenURL: c.TokenURL, HTTPClient: hc,
		})
	case config.CredOAuth2:
		if c.Grant == config.GrantRefreshToken {
			return tokens.NewOAuth2Delegated(&tokens.OAuth2Delegated{
				AuthorizeURL: c.AuthorizeURL, TokenURL: c.TokenURL, DeviceURL: c.DeviceURL,
				ClientID: c.ClientID, ClientSecret: c.ClientSecret.Value(), Scopes: c.Scopes,
				PKCE: c.PKCE == nil || *c.PKCE, Params: c.Params,
				Account: c.Account, Initial: c.RefreshToken.Value(), Store: a.store, HTTPClient: hc,
			})
		}
		return tokens.NewClientCredentials(tokens.ClientCredentials{
			TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret.Value(),
			Scopes: c.Scopes, HTTPClient: hc,
		}), nil
	}
	return nil, fmt.Errorf("credential type %q gives no tokens", c.Type)
}

func (a *app) upstreamAuth(p *config.Profile, mech string) upstream.Auth {
	auth := upstream.Auth{Mechanism: mech, User: p.Mailbox}
	if p.Credentials.Type == config.CredBasic {
		auth.User = p.Credentials.Username
		auth.Password = p.Credentials.Password.Value()
	} else {
		auth.Tokens = a.caches[p.Name]
	}
	return auth
}

func (a *app) smtpUpstream(p *config.Profile) (*upstream.SMTP, error) {
	u := p.SMTP.Upstream
	tc, err := clientTLS(u.CAFile)
	if err != nil {
		return nil, fmt.Errorf("profile %q: smtp.upstream.ca_file: %w", p.Name, err)
	}
	return upstream.NewSMTP(upstream.SMTPOptions{
		Profile: p.Name, Addr: u.Host, TLS: u.TLS, TLSConfig: tc,
		Auth:               a.upstreamAuth(p, u.Mechanism),
		MessagesPerSession: u.MessagesPerSession,
		Logger:             a.log,
	}), nil
}

func (a *app) mailboxOptions(p *config.Profile, proto string, u config.Upstream) (upstream.MailboxOptions, error) {
	tc, err := clientTLS(u.CAFile)
	if err != nil {
		return upstream.MailboxOptions{}, fmt.Errorf("profile %q: %s.upstream.ca_file: %w", p.Name, proto, err)
	}
	return upstream.MailboxOptions{
		Profile: p.Name, Addr: u.Host, TLS: u.TLS, TLSConfig: tc,
		Auth: a.upstreamAuth(p, u.Mechanism), Logger: a.log,
	}, nil
}

// clientTLS trusts caFile instead of the system roots when given.
func clientTLS(caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tc.RootCAs = pool
	return tc, nil
}

// serverTLS loads a local listener's certificate.
func serverTLS(t *config.LocalTLS) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// smtpSender adapts upstream.SMTP to proxy.Sender.
type smtpSender struct{ up *upstream.SMTP }

func (s smtpSender) Begin(ctx context.Context, from string, opts *smtp.MailOptions) (proxy.Transaction, error) {
	t, err := s.up.Begin(ctx, from, opts)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// localServer is a local listener of any protocol.
type localServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// listenerSpec is one local address: its protocol, TLS and server.
type listenerSpec struct {
	proto string
	srv   localServer
}

// servers groups profiles by listen address: one server per address, the
// login name picking the profile where several share it (config checks
// that an address has one protocol and one TLS setting).
func (a *app) servers() (map[string]listenerSpec, error) {
	type group struct {
		proto string
		l     config.Listener
		smtp  []proxy.SMTPProfile
		imap  []proxy.IMAPProfile
		pop3  []proxy.POP3Profile
		max   int64
	}
	groups := map[string]*group{}
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
			}
			switch ln.Proto {
			case "smtp":
				sp := proxy.SMTPProfile{Name: name, Sender: smtpSender{a.smtp[name]}}
				if p.SMTP.LocalAuth == config.LocalAuthPassword {
					sp.Users = users
				}
				g.smtp = append(g.smtp, sp)
				g.max = max(g.max, p.SMTP.MaxMessageBytes)
			case "imap":
				g.imap = append(g.imap, proxy.IMAPProfile{Name: name, Upstream: a.imap[name], Users: users})
			case "pop3":
				g.pop3 = append(g.pop3, proxy.POP3Profile{Name: name, Upstream: a.pop3[name], Users: users})
			}
		}
	}
	out := map[string]listenerSpec{}
	for addr, g := range groups {
		tc, err := serverTLS(g.l.TLS)
		if err != nil {
			return nil, fmt.Errorf("%s listener %s: tls: %w", g.proto, addr, err)
		}
		implicit := g.l.TLS != nil && g.l.TLS.Mode == config.TLSImplicit
		mo := proxy.MailboxOptions{TLSConfig: tc, ImplicitTLS: implicit, RequireTLS: g.l.RequiresTLS(), Logger: a.log, Observer: a.observer}
		var srv localServer
		switch g.proto {
		case "smtp":
			srv = proxy.NewSMTPServer(proxy.SMTPOptions{
				Profiles: g.smtp, TLSConfig: tc, ImplicitTLS: implicit, RequireTLS: g.l.RequiresTLS(),
				MaxMessageBytes: g.max, Logger: a.log, Observer: a.observer,
			})
		case "imap":
			srv = proxy.NewIMAPServer(g.imap, mo)
		case "pop3":
			srv = proxy.NewPOP3Server(g.pop3, mo)
		}
		out[addr] = listenerSpec{proto: g.proto, srv: srv}
	}
	return out, nil
}

func cmdKeyGenerate(w io.Writer) error {
	_, err := fmt.Fprintln(w, tokens.NewKey())
	return err
}

// uniqueCaches lists each token cache once.
func uniqueCaches(a *app) []*tokens.Cache {
	seen := map[*tokens.Cache]bool{}
	var out []*tokens.Cache
	for _, name := range a.cfg.ProfileNames() {
		if c := a.caches[name]; c != nil && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}
