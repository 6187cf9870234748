package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"mailproxy/admin"
	"mailproxy/config"
)

// adminServer builds the admin HTTP server and the alerts webhook when
// configured; it must run before servers(), which hands the metrics to the
// listeners. It returns nil when there is no admin section.
func (a *app) adminServer() (*http.Server, error) {
	if u := a.cfg.Alerts.WebhookURL; u.IsSet() {
		wh := &admin.Webhook{URL: u.Value(), Client: &http.Client{Timeout: 15 * time.Second}, Logger: a.log}
		a.onNeedsSignIn = wh.NeedsSignIn
	}
	c := a.cfg.Admin
	if c == nil {
		return nil, nil
	}
	sources := map[string]admin.TokenSource{}
	var profiles []admin.Profile
	for _, name := range a.cfg.ProfileNames() {
		p := a.cfg.Profiles[name]
		ap := admin.Profile{Name: name, Credential: credentialLabel(p.Credentials), Account: accountOf(p), Delegated: a.delegated[name]}
		if tc := a.caches[name]; tc != nil {
			ap.Tokens = tc
			sources[name] = tc
		}
		profiles = append(profiles, ap)
	}
	m := admin.NewMetrics(sources)
	a.observer = m
	h := admin.New(admin.Options{
		Profiles: profiles, Username: c.Username, Password: c.Password.Value(), Token: c.Token.Value(),
		RedirectURL: c.RedirectURL, Metrics: m, Logger: a.log,
		Test: func(ctx context.Context, profile string) (string, bool) {
			var out bytes.Buffer
			ok := runCheck(ctx, a, profile, "", &out)
			return out.String(), ok
		},
		Ready: func() []string {
			if !a.ready.Load() {
				return []string{"listeners are not up"}
			}
			return nil
		},
	})
	srv := &http.Server{Addr: c.Listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if c.TLS != nil {
		tc, err := serverTLS(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("admin.tls: %w", err)
		}
		srv.TLSConfig = tc
	}
	return srv, nil
}

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
