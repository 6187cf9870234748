package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Delegated is a credential a person grants once by signing in; from then
// on its refresh token is redeemed headless. Sign-in methods take the
// account to sign in; Fetch uses the profile's own account.
type Delegated interface {
	Fetcher
	// AuthCodeURL is where to send the person's browser (authorization
	// code flow; with PKCE when the provider takes it).
	AuthCodeURL(ctx context.Context, account, redirectURI, state, verifier string) (string, error)
	// Redeem exchanges the code the browser brought back, saves the grant
	// and returns the account that signed in.
	Redeem(ctx context.Context, account, code, redirectURI, verifier string) (string, error)
	// DeviceCode starts a device code sign-in.
	DeviceCode(ctx context.Context, account string) (*DeviceAuth, error)
	// Remove forgets account's grant; it reports whether there was one.
	Remove(ctx context.Context, account string) (bool, error)
	// Key is account's key in the Store.
	Key(account string) string
}

// DeviceAuth is a device code sign-in under way.
type DeviceAuth struct {
	UserCode        string
	VerificationURI string
	Expires         time.Time
	// Message is the provider's instruction for the person, if it gives one.
	Message string
	wait    func(ctx context.Context) (string, error)
}

// Wait polls until the person has signed in (or the code expired) and
// returns the account.
func (d *DeviceAuth) Wait(ctx context.Context) (string, error) { return d.wait(ctx) }

// OAuth2Delegated is any OAuth 2.0 provider's authorization code (and
// device code) grant, with the refresh token kept in Store.
type OAuth2Delegated struct {
	AuthorizeURL string
	TokenURL     string
	// DeviceURL is the device authorization endpoint (RFC 8628), if any.
	DeviceURL    string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// PKCE sends an S256 code challenge (RFC 7636).
	PKCE bool
	// Params are extra authorize parameters (access_type=offline, prompt=consent, ...).
	Params map[string]string
	// Account is the profile's account; Initial seeds its refresh token.
	Account    string
	Initial    string
	Store      *Vault
	HTTPClient *http.Client

	mu       sync.Mutex
	rejected string // a stored access token the upstream refused
}

// NewOAuth2Delegated checks o and returns it as a Delegated.
func NewOAuth2Delegated(o *OAuth2Delegated) (*OAuth2Delegated, error) {
	if o.Store == nil {
		return nil, errors.New("a token_store is needed to keep refresh tokens")
	}
	return o, nil
}

func (o *OAuth2Delegated) config(redirectURI string) *oauth2.Config {
	// A public client (no secret) sends its client_id in the form. x/oauth2's
	// auto-detection would otherwise try a header first and repeat every
	// failed request, which also defeats a device code slow_down.
	style := oauth2.AuthStyleAutoDetect
	if o.ClientSecret == "" {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes, RedirectURL: redirectURI,
		Endpoint: oauth2.Endpoint{AuthURL: o.AuthorizeURL, TokenURL: o.TokenURL, DeviceAuthURL: o.DeviceURL, AuthStyle: style},
	}
}

// Key is the account's key in the store.
func (o *OAuth2Delegated) Key(account string) string { return o.ClientID + "/" + account }

// Fetch redeems the newest refresh token and saves a rotated one before the
// access token is handed out, so a restart never reuses a spent one. It
// holds the store's lock throughout, so no other process (check, token add,
// another profile, another replica) redeems the same refresh token
// meanwhile. A process that waited for the lock finds what the one before
// it stored: while that access token has more than half its lifetime left,
// it is used and nothing is redeemed.
func (o *OAuth2Delegated) Fetch(ctx context.Context) (*oauth2.Token, error) {
	key := o.Key(o.Account)
	var tok *oauth2.Token
	err := o.Store.Redeem(ctx, func(ctx context.Context) error {
		rt := o.Initial
		e, ok := o.Store.Get(ctx, key)
		if ok && e.RefreshToken != "" {
			rt = e.RefreshToken
		}
		if ok && o.fresh(e, time.Now()) {
			tok = &oauth2.Token{AccessToken: e.AccessToken, TokenType: "Bearer", Expiry: e.Expiry}
			return nil
		}
		if rt == "" {
			return &NotSignedInError{Account: o.Account}
		}
		if err := o.Store.Claim(ctx); err != nil {
			return err
		}
		var err error
		tok, err = o.config("").TokenSource(withClient(ctx, o.HTTPClient), &oauth2.Token{RefreshToken: rt}).Token()
		if err != nil {
			err = cleanRetrieveError(err)
			o.noteError(ctx, key, err)
			return err
		}
		// Kept even if the store cannot be written now (see Vault): a
		// rotated refresh token is never dropped.
		o.Store.Update(ctx, key, func(e *Entry) {
			if e.RefreshToken == "" || tok.RefreshToken != "" {
				e.RefreshToken = tok.RefreshToken
			}
			if e.RefreshToken == "" {
				e.RefreshToken = rt
			}
			e.Provider, e.Scopes = o.TokenURL, o.Scopes
			e.Updated, e.Expiry, e.LastError = time.Now(), tok.Expiry, ""
			e.AccessToken = tok.AccessToken
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// fresh reports whether e's access token may be used instead of redeeming:
// it has more than half its lifetime left (so that the process taking it
// does not need another soon) and the upstream has not refused it here.
func (o *OAuth2Delegated) fresh(e Entry, now time.Time) bool {
	o.mu.Lock()
	rejected := o.rejected
	o.mu.Unlock()
	if e.AccessToken == "" || e.AccessToken == rejected || e.Expiry.IsZero() {
		return false
	}
	return e.Expiry.Sub(now) > e.Expiry.Sub(e.Updated)/2
}

// Reject keeps a stored access token that the upstream refused from being
// used again by this process.
func (o *OAuth2Delegated) Reject(tok *oauth2.Token) {
	o.mu.Lock()
	o.rejected = tok.AccessToken
	o.mu.Unlock()
}

// SignedIn reports whether the profile's account has a grant in the store
// (from memory: no I/O).
func (o *OAuth2Delegated) SignedIn() bool {
	e, ok := o.Store.Peek(o.Key(o.Account))
	return ok && e.RefreshToken != ""
}

// noteError records a failed refresh for token list, once per new error.
func (o *OAuth2Delegated) noteError(ctx context.Context, key string, err error) {
	if e, ok := o.Store.Peek(key); ok && e.LastError != err.Error() {
		_ = o.Store.Update(ctx, key, func(e *Entry) { e.LastError = err.Error() })
	}
}

// NotSignedInError is a delegated credential nobody has signed in to yet
// (or whose grant was removed).
type NotSignedInError struct{ Account string }

func (e *NotSignedInError) Error() string { return e.Account + " is not signed in yet" }

// AuthCodeURL implements Delegated.
func (o *OAuth2Delegated) AuthCodeURL(_ context.Context, account, redirectURI, state, verifier string) (string, error) {
	if o.AuthorizeURL == "" {
		return "", errors.New("no authorize_url configured: use the device code sign-in")
	}
	var opts []oauth2.AuthCodeOption
	if o.PKCE {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	for k, v := range o.Params {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	if account != "" && o.Params["login_hint"] == "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", account))
	}
	return o.config(redirectURI).AuthCodeURL(state, opts...), nil
}

// Redeem implements Delegated.
func (o *OAuth2Delegated) Redeem(ctx context.Context, account, code, redirectURI, verifier string) (string, error) {
	var opts []oauth2.AuthCodeOption
	if o.PKCE {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	tok, err := o.config(redirectURI).Exchange(withClient(ctx, o.HTTPClient), code, opts...)
	if err != nil {
		return "", cleanRetrieveError(err)
	}
	return o.save(ctx, account, tok)
}

// DeviceCode implements Delegated.
func (o *OAuth2Delegated) DeviceCode(ctx context.Context, account string) (*DeviceAuth, error) {
	if o.DeviceURL == "" {
		return nil, errors.New("no device_url configured: use the browser sign-in")
	}
	cfg := o.config("")
	da, err := cfg.DeviceAuth(withClient(ctx, o.HTTPClient))
	if err != nil {
		return nil, cleanRetrieveError(err)
	}
	return &DeviceAuth{
		UserCode: da.UserCode, VerificationURI: da.VerificationURI, Expires: da.Expiry,
		wait: func(ctx context.Context) (string, error) {
			tok, err := cfg.DeviceAccessToken(withClient(ctx, o.HTTPClient), da)
			if errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(da.Expiry) {
				// x/oauth2 stops polling when the code expires.
				return "", &OAuthError{Code: "expired_token", Description: "nobody signed in before the code expired: start again"}
			}
			if err != nil {
				return "", cleanRetrieveError(err)
			}
			return o.save(ctx, account, tok)
		},
	}, nil
}

// save keeps a new grant. The account is the one the ID token names when
// the provider sends one (scope openid), else the one asked for.
func (o *OAuth2Delegated) save(ctx context.Context, account string, tok *oauth2.Token) (string, error) {
	if tok.RefreshToken == "" {
		return "", errors.New("the provider returned no refresh token: ask for offline access (scope offline_access, or the parameter access_type=offline)")
	}
	if who := idTokenUser(tok); who != "" {
		account = who
	}
	if account == "" {
		return "", errors.New("cannot tell which account signed in: name it (mailproxy token add -account)")
	}
	now := time.Now()
	err := o.Store.Put(ctx, o.Key(account), Entry{RefreshToken: tok.RefreshToken, Provider: o.TokenURL, Scopes: o.Scopes,
		Added: now, Updated: now, Expiry: tok.Expiry, AccessToken: tok.AccessToken})
	return account, err
}

// Remove implements Delegated.
func (o *OAuth2Delegated) Remove(ctx context.Context, account string) (bool, error) {
	return o.Store.Remove(ctx, o.Key(account))
}

// idTokenUser reads who signed in from an ID token that came straight from
// the token endpoint over TLS (OpenID Connect Core §3.1.3.7 lets a client
// skip the signature check then). It is only used to name the account.
func idTokenUser(tok *oauth2.Token) string {
	raw, _ := tok.Extra("id_token").(string)
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Email             string `json:"email"`
		PreferredUsername string `json:"preferred_username"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	if c.PreferredUsername != "" {
		return c.PreferredUsername
	}
	return c.Email
}

// withParams adds parameters to an authorize URL built by a library that
// does not take them.
func withParams(raw string, params map[string]string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
