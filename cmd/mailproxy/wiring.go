package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
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
	smtp   map[string]*upstream.SMTP
}

// build turns the configuration into token caches and upstreams. It opens no
// listener and makes no network call.
func build(cfg *config.Config, log *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, caches: map[string]*tokens.Cache{}, smtp: map[string]*upstream.SMTP{}}
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
	shared := map[string]*tokens.Cache{}
	for _, name := range cfg.ProfileNames() {
		p := cfg.Profiles[name]
		if p.Credentials.UsesTokens() {
			key := credentialKey(p)
			c, ok := shared[key]
			if !ok {
				f, err := a.fetcher(p, hc)
				if err != nil {
					return nil, fmt.Errorf("profile %q: credentials: %w", name, err)
				}
				c = tokens.NewCache(name, f, tokens.CacheOptions{Logger: log})
				shared[key] = c
			}
			a.caches[name] = c
		}
		if s := p.SMTP; s != nil {
			up, err := a.smtpUpstream(p)
			if err != nil {
				return nil, err
			}
			a.smtp[name] = up
		}
	}
	return a, nil
}

// credentialKey identifies a credential so that profiles using the same one
// share a token cache (and so one token request).
func credentialKey(p *config.Profile) string {
	c := p.Credentials
	return strings.Join([]string{c.Type, c.Authority, c.TenantID, c.ClientID, c.CertificateFile,
		c.KeyFile, c.ServiceAccount, c.Impersonate, c.TokenURL, c.Grant,
		strings.Join(c.Scopes, " "), refreshAccount(p)}, "\x00")
}

// refreshAccount names a refresh-token credential in the token store.
func refreshAccount(p *config.Profile) string {
	if p.Credentials.Grant != config.GrantRefreshToken {
		return ""
	}
	return p.Credentials.ClientID + "/" + p.Mailbox
}

func (a *app) fetcher(p *config.Profile, hc *http.Client) (tokens.Fetcher, error) {
	c := p.Credentials
	switch c.Type {
	case config.CredMicrosoft365:
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
			return tokens.NewRefreshGrant(tokens.RefreshGrant{
				TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret.Value(),
				Scopes: c.Scopes, Account: refreshAccount(p), Initial: c.RefreshToken.Value(),
				Store: a.store, HTTPClient: hc,
			}), nil
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

// smtpServers groups profiles by listen address: one server per address,
// the login name picking the profile where several share it.
func (a *app) smtpServers() (map[string]*proxy.SMTPServer, error) {
	type group struct {
		profiles []proxy.SMTPProfile
		tls      *config.LocalTLS
		max      int64
	}
	groups := map[string]*group{}
	for _, name := range a.cfg.ProfileNames() {
		p := a.cfg.Profiles[name]
		if p.SMTP == nil {
			continue
		}
		g := groups[p.SMTP.Listen]
		if g == nil {
			g = &group{tls: p.SMTP.TLS}
			groups[p.SMTP.Listen] = g
		}
		sp := proxy.SMTPProfile{Name: name, Sender: smtpSender{a.smtp[name]}}
		if p.SMTP.LocalAuth == config.LocalAuthPassword {
			for _, u := range p.LocalUsers {
				sp.Users = append(sp.Users, proxy.LocalUser{Name: u.Name, Username: u.Username, Password: u.Password.Value()})
			}
		}
		g.profiles = append(g.profiles, sp)
		g.max = max(g.max, p.SMTP.MaxMessageBytes)
	}
	out := map[string]*proxy.SMTPServer{}
	for addr, g := range groups {
		tc, err := serverTLS(g.tls)
		if err != nil {
			return nil, fmt.Errorf("smtp listener %s: tls: %w", addr, err)
		}
		out[addr] = proxy.NewSMTPServer(proxy.SMTPOptions{
			Profiles: g.profiles, TLSConfig: tc, ImplicitTLS: g.tls != nil && g.tls.Mode == config.TLSImplicit,
			MaxMessageBytes: g.max, Logger: a.log,
		})
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
