// Package app builds one mailproxy from a configuration, in one function
// (New): the token store and caches, one backend per profile and protocol,
// the local listeners, the admin server and its metrics, the alerts. serve,
// check, the token commands and the admin page all use what it builds.
//
// New opens no socket and makes no network call; Serve binds and runs,
// Check logs in to a profile's upstreams once.
package app

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailproxy/admin"
	"mailproxy/config"
	"mailproxy/proxy"
	"mailproxy/tokens"
	"mailproxy/upstream"
	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// Options tune New.
type Options struct {
	Logger *slog.Logger
	// Serving is set for mailproxy serve: a long-running process that
	// keeps token store changes it cannot save in memory until it can. A
	// one-off command (check, token) refuses to redeem a refresh token
	// while the store cannot be written instead.
	Serving bool
	// Prev is the App a reload replaces: the token store, the token caches
	// of credentials that did not change, the Graph mirrors, the metrics
	// and the admin server's sign-ins under way are taken over from it.
	Prev *App
}

// App is everything built from a configuration.
type App struct {
	*shared
	cfg *config.Config
	log *slog.Logger
	// creds are the profiles' token credentials; profiles with equal
	// credentials share one.
	creds     map[string]*credential
	smtp      map[string]*upstream.SMTP
	imap      map[string]*upstream.IMAP
	pop3      map[string]*upstream.POP3
	graph     map[string]*graphProfile
	listeners []*listener
	admin     *http.Server
	adminOpts *admin.Options
	ready     atomic.Bool
}

// shared is what the Apps of one process have in common, one after
// another across reloads.
type shared struct {
	storeKey string        // token_store as configured: a change needs a restart
	vault    *tokens.Vault // nil without token_store
	// creds are every credential built, by what makes it the same (its
	// settings and secrets): a reload keeps their tokens.
	creds  map[string]*credential
	msApps map[string]*tokens.MicrosoftApp
	// mirrors are the Graph mailboxes served over IMAP, by state file.
	mirrors map[string]*mirror.Mailbox
	// graphLimiter bounds Graph requests per app and mailbox, process-wide.
	graphLimiter *graph.Limiter
	logins       map[int]*proxy.LoginGuard // by failed logins a minute
	metrics      *admin.Metrics
	sessionsSeen *collectAfterLogins // metrics, and the memory of login bursts returned
	webhook      *admin.Webhook
	adminHandler *admin.Server
	// reloadProblem is why the last reload was refused ("" when it was
	// not); reload re-reads the file (nil: no file to read).
	mu            sync.Mutex
	reloadProblem string
	reload        func(context.Context) error
}

// credential is a token cache and, for a credential a person grants, its
// sign-in.
type credential struct {
	cache     *tokens.Cache
	delegated tokens.Delegated
}

// New builds everything cfg describes. Every problem found is reported,
// joined, each naming its profile or key.
func New(ctx context.Context, cfg *config.Config, o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &App{cfg: cfg, log: o.Logger, creds: map[string]*credential{},
		smtp: map[string]*upstream.SMTP{}, imap: map[string]*upstream.IMAP{}, pop3: map[string]*upstream.POP3{},
		graph: map[string]*graphProfile{}}
	if o.Prev != nil {
		a.shared = o.Prev.shared
		if storeKey(cfg) != a.storeKey {
			return nil, errors.New("token_store: changed: a reload keeps the token store in use; restart mailproxy to use another")
		}
	} else {
		sh, err := newShared(ctx, cfg, o)
		if err != nil {
			return nil, err
		}
		a.shared = sh
	}
	var errs []error
	if err := a.buildCredentials(); err != nil {
		errs = append(errs, err)
	}
	for _, name := range cfg.ProfileNames() {
		if err := a.buildUpstreams(cfg.Profiles[name]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.buildListeners(); err != nil {
		errs = append(errs, err)
	}
	if err := a.buildAdmin(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if o.Prev == nil {
		a.takeOver()
	}
	return a, nil
}

// takeOver makes a the App the process-wide parts serve: the metrics read
// its token caches, alerts go to its webhook, the admin server shows its
// profiles. A reload calls it once the new App is in force, so that a
// refused one changes nothing.
func (a *App) takeOver() {
	sources := map[string]admin.TokenSource{}
	for name, c := range a.creds {
		sources[name] = c.cache
	}
	a.metrics.SetTokenSources(sources)
	a.webhook.SetURL(a.cfg.Alerts.WebhookURL.Value())
	if a.adminOpts != nil {
		if a.adminHandler == nil {
			a.adminHandler = admin.New(*a.adminOpts)
		} else {
			a.adminHandler.Update(*a.adminOpts)
		}
		a.admin.Handler = a.adminHandler
	}
}

// newShared opens the token store and makes what the Apps of a process
// share.
func newShared(ctx context.Context, cfg *config.Config, o Options) (*shared, error) {
	sh := &shared{storeKey: storeKey(cfg), creds: map[string]*credential{}, msApps: map[string]*tokens.MicrosoftApp{},
		mirrors: map[string]*mirror.Mailbox{}, graphLimiter: graph.NewLimiter(graph.DefaultConcurrency), logins: map[int]*proxy.LoginGuard{},
		webhook: &admin.Webhook{Client: &http.Client{Timeout: 15 * time.Second}, Logger: o.Logger}}
	if ts := cfg.TokenStore; ts != nil {
		key, err := tokens.ParseKey(ts.Key.Value())
		if err != nil {
			return nil, fmt.Errorf("token_store.key: %w", err)
		}
		var store tokens.Store
		if ts.Postgres.IsSet() {
			store, err = tokens.NewPGStore(ctx, ts.Postgres.Value(), key, o.Logger)
		} else {
			store, err = tokens.NewFileStore(ts.Path, key)
		}
		if err != nil {
			return nil, err
		}
		if sh.vault, err = tokens.NewVault(ctx, store, tokens.VaultOptions{Logger: o.Logger, KeepInMemory: o.Serving}); err != nil {
			return nil, err
		}
	}
	var store admin.TokenStore
	if sh.vault != nil {
		store = sh.vault
	}
	sh.metrics = admin.NewMetrics(nil, store)
	sh.sessionsSeen = newCollectAfterLogins(sh.metrics)
	return sh, nil
}

// storeKey is the token store's settings.
func storeKey(cfg *config.Config) string {
	if ts := cfg.TokenStore; ts != nil {
		sum := sha256.Sum256([]byte(ts.Key.Value() + "\x00" + ts.Postgres.Value()))
		return ts.Path + "\x00" + hex.EncodeToString(sum[:])
	}
	return ""
}

// Config is the configuration the App was built from.
func (a *App) Config() *config.Config { return a.cfg }

// Vault is the token store (nil without token_store).
func (a *App) Vault() *tokens.Vault { return a.vault }

// Delegated is the credential a person signs in to for profile, if any.
func (a *App) Delegated(profile string) tokens.Delegated {
	if c := a.creds[profile]; c != nil {
		return c.delegated
	}
	return nil
}

// Close ends what a one-off command started: idle upstream sessions, and
// the token store's unsaved changes, whose loss its error names.
func (a *App) Close(ctx context.Context) error {
	for _, up := range a.smtp {
		up.Close()
	}
	for _, c := range a.uniqueCredentials() {
		c.cache.Close()
	}
	a.closeGraph()
	if a.vault != nil {
		return a.vault.Close(ctx)
	}
	return nil
}

// credentialKey identifies a credential so that profiles using the same
// one (and the same scopes) share a token cache, and so one token request.
type credentialKey struct {
	typ, app, authority, tenant, client, cert, keyFile, serviceAccount, impersonate, tokenURL, grant, scopes, account string
}

func keyOf(p *config.Profile) credentialKey {
	c := p.Credentials
	k := credentialKey{c.Type, c.App, c.Authority, c.TenantID, c.ClientID, c.CertificateFile,
		c.KeyFile, c.ServiceAccount, c.Impersonate, c.TokenURL, c.Grant, strings.Join(c.Scopes, " "), ""}
	if c.Delegated() {
		k.account = c.Account
	}
	return k
}

func (a *App) buildCredentials() error {
	hc := &http.Client{Timeout: 30 * time.Second}
	var errs []error
	for _, name := range a.cfg.ProfileNames() {
		p := a.cfg.Profiles[name]
		if !p.Credentials.UsesTokens() {
			continue
		}
		key := reuseKey(p)
		if c := a.shared.creds[key]; c != nil {
			a.creds[name] = c
			continue
		}
		f, err := a.fetcher(p, hc, a.msApps)
		if err != nil {
			errs = append(errs, fmt.Errorf("profile %q: credentials: %w", name, err))
			continue
		}
		opts := tokens.CacheOptions{Logger: a.log, OnNeedsSignIn: a.webhook.Notify}
		c := &credential{}
		if d, ok := f.(tokens.Delegated); ok {
			c.delegated = d
			opts.Generation = a.vault.Generation
			opts.Fix = "a person must sign in: run mailproxy token add " + name
			if a.cfg.Admin != nil {
				opts.Fix += ", or press Get token on the admin page"
			}
		}
		c.cache = tokens.NewCache(name, f, opts)
		a.shared.creds[key] = c
		a.creds[name] = c
	}
	return errors.Join(errs...)
}

// reuseKey is what makes two profiles' credentials one: their settings,
// and a digest of their secrets and of the files they read, so that a
// reload with a new client secret or certificate makes a new one.
func reuseKey(p *config.Profile) string {
	c := p.Credentials
	h := sha256.New()
	for _, v := range []string{c.ClientSecret.Value(), c.CertificatePassword.Value(), c.RefreshToken.Value(), c.Password.Value()} {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	for _, f := range []string{c.CertificateFile, c.KeyFile} {
		if f != "" {
			data, err := os.ReadFile(f)
			fmt.Fprintf(h, "%s:%v:%x", f, err, sha256.Sum256(data))
		}
	}
	return fmt.Sprintf("%v %x", keyOf(p), h.Sum(nil))
}

func (a *App) fetcher(p *config.Profile, hc *http.Client, msApps map[string]*tokens.MicrosoftApp) (tokens.Fetcher, error) {
	c := p.Credentials
	switch c.Type {
	case config.CredMicrosoft365:
		if c.App == config.AppPublic {
			key := c.Authority + "\x00" + c.TenantID + "\x00" + c.ClientID
			msApp := msApps[key]
			if msApp == nil {
				var err error
				if msApp, err = tokens.NewMicrosoftApp(c.Authority, c.TenantID, c.ClientID, a.vault, hc); err != nil {
					return nil, err
				}
				msApps[key] = msApp
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
				Account: c.Account, Initial: c.RefreshToken.Value(), Store: a.vault, HTTPClient: hc,
			})
		}
		return tokens.NewClientCredentials(tokens.ClientCredentials{
			TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret.Value(),
			Scopes: c.Scopes, HTTPClient: hc,
		}), nil
	}
	return nil, fmt.Errorf("credential type %q gives no tokens", c.Type)
}

// uniqueCredentials lists each credential once.
func (a *App) uniqueCredentials() []*credential {
	seen := map[*credential]bool{}
	var out []*credential
	for _, name := range a.cfg.ProfileNames() {
		if c := a.creds[name]; c != nil && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

func (a *App) upstreamAuth(p *config.Profile, mech string) upstream.Auth {
	auth := upstream.Auth{Mechanism: mech, User: p.Mailbox}
	if p.Credentials.Type == config.CredBasic {
		auth.User = p.Credentials.Username
		auth.Password = p.Credentials.Password.Value()
	} else if c := a.creds[p.Name]; c != nil {
		auth.Tokens = c.cache
	}
	return auth
}

func (a *App) buildUpstreams(p *config.Profile) error {
	if p.Graph != nil {
		if a.creds[p.Name] == nil {
			return nil // its credential's problem is reported already
		}
		return a.buildGraph(p)
	}
	var errs []error
	if s := p.SMTP; s != nil {
		u := s.Upstream
		tc, err := clientTLS(u.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("profile %q: smtp.upstream.ca_file: %w", p.Name, err))
		} else {
			a.smtp[p.Name] = upstream.NewSMTP(upstream.SMTPOptions{
				Profile: p.Name, Addr: u.Host, TLS: u.TLS, TLSConfig: tc,
				Auth:               a.upstreamAuth(p, u.Mechanism),
				MessagesPerSession: u.MessagesPerSession,
				Timeout:            u.Timeout.D(),
				Logger:             a.log,
			})
		}
	}
	var pop3 *config.Receiving
	if p.POP3 != nil {
		pop3 = &p.POP3.Receiving
	}
	for _, r := range []struct {
		proto string
		rcv   *config.Receiving
	}{{"imap", p.IMAP}, {"pop3", pop3}} {
		if r.rcv == nil {
			continue
		}
		u := r.rcv.Upstream
		tc, err := clientTLS(u.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("profile %q: %s.upstream.ca_file: %w", p.Name, r.proto, err))
			continue
		}
		o := upstream.MailboxOptions{Profile: p.Name, Addr: u.Host, TLS: u.TLS, TLSConfig: tc, Auth: a.upstreamAuth(p, u.Mechanism), Logger: a.log}
		if r.proto == "imap" {
			a.imap[p.Name] = upstream.NewIMAP(o)
		} else {
			a.pop3[p.Name] = upstream.NewPOP3(o)
		}
	}
	return errors.Join(errs...)
}

// clientTLS trusts caFile instead of the system roots when given.
func clientTLS(caFile string) (*tls.Config, error) {
	// Sessions are resumed: an upstream session after the first (one per
	// messages_per_session messages, one per IMAP or POP3 login) skips
	// the certificate and its check.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(16)}
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

// observer is what the listeners report to: the metrics.
func (a *App) observer() proxy.Observer { return a.sessionsSeen }
