package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"mailproxy/admin"
	"mailproxy/config"
)

// buildAdmin builds the admin HTTP server when configured.
func (a *App) buildAdmin() error {
	c := a.cfg.Admin
	if c == nil {
		return nil
	}
	var profiles []admin.Profile
	for _, name := range a.cfg.ProfileNames() {
		p := a.cfg.Profiles[name]
		ap := admin.Profile{Name: name, Credential: credentialLabel(p.Credentials), Account: accountOf(p)}
		if cr := a.creds[name]; cr != nil {
			ap.Tokens, ap.Delegated = cr.cache, cr.delegated
		}
		profiles = append(profiles, ap)
	}
	o := admin.Options{
		Profiles: profiles, Username: c.Username, Password: c.Password.Value(), Token: c.Token.Value(),
		RedirectURL: c.RedirectURL, Metrics: a.metrics, Logger: a.log,
		Test: func(ctx context.Context, profile string) (string, bool) {
			var out bytes.Buffer
			ok := a.Check(ctx, profile, "", &out)
			return out.String(), ok
		},
		Ready:    a.notReady,
		Degraded: a.degraded,
		Reload:   a.reloadFunc(),
	}
	// One handler for the process (takeOver): a reload hands it the new
	// profiles, and sign-ins under way go on.
	a.adminOpts = &o
	srv := &http.Server{Addr: c.Listen, ReadHeaderTimeout: 10 * time.Second}
	if c.TLS != nil {
		tc, err := serverTLS(c.TLS)
		if err != nil {
			return fmt.Errorf("admin.tls: %w", err)
		}
		srv.TLSConfig = tc
	}
	a.admin = srv
	return nil
}

// notReady lists what keeps the process from serving as it should, beside
// the profiles' tokens (the admin server checks those itself).
func (a *App) notReady() []string {
	var out []string
	if !a.ready.Load() {
		out = append(out, "listeners are not up")
	}
	a.shared.mu.Lock()
	problem := a.reloadProblem
	a.shared.mu.Unlock()
	if problem != "" {
		out = append(out, "the last reload was refused, the configuration before it is in force: "+problem)
	}
	if a.vault != nil {
		if err := a.vault.Durable(); err != nil {
			out = append(out, err.Error()+"; a restart before then loses them")
		}
	}
	return out
}

// degraded lists what an operator should know while the process serves.
func (a *App) degraded() []string {
	if a.vault != nil {
		if err := a.vault.Reachable(); err != nil {
			return []string{err.Error() + "; serving with the tokens in memory, which are not refreshed until it answers"}
		}
	}
	return nil
}

// reloadFunc is what POST /reload runs: the reload of the process serving,
// if any, looked up when asked (Serve sets it).
func (a *App) reloadFunc() func(context.Context) error {
	return func(ctx context.Context) error {
		a.shared.mu.Lock()
		f := a.reload
		a.shared.mu.Unlock()
		if f == nil {
			return errNoReload
		}
		return f(ctx)
	}
}

// errNoReload: the process was not started from a configuration file.
var errNoReload = errors.New("this process was not started from a configuration file (mailproxy demo): nothing to reload")

// credentialLabel names a credential for people.
func credentialLabel(c config.Credentials) string {
	switch {
	case c.Type == config.CredMicrosoft365:
		return "microsoft365 (" + c.App + " app)"
	case c.Type == config.CredOAuth2 && c.Grant == config.GrantRefreshToken:
		return "oauth2 (delegated, signed in by a person)"
	case c.Type == config.CredOAuth2:
		return "oauth2 (client credentials)"
	}
	return c.Type
}

// accountOf is who the credential acts as.
func accountOf(p *config.Profile) string {
	c := p.Credentials
	switch {
	case c.Type == config.CredGoogleServiceAccount:
		return c.Impersonate
	case c.Type == config.CredBasic:
		return c.Username
	case c.Delegated():
		return c.Account
	}
	return p.Mailbox
}
