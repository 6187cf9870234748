package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ClientCredentials describes the client credentials grant at any token URL.
type ClientCredentials struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	HTTPClient   *http.Client
}

// NewClientCredentials builds a Fetcher for the client credentials grant.
func NewClientCredentials(c ClientCredentials) Fetcher {
	cfg := &clientcredentials.Config{
		ClientID: c.ClientID, ClientSecret: c.ClientSecret,
		TokenURL: c.TokenURL, Scopes: c.Scopes,
	}
	return FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		tok, err := cfg.Token(withClient(ctx, c.HTTPClient))
		return tok, cleanRetrieveError(err)
	})
}

func withClient(ctx context.Context, hc *http.Client) context.Context {
	if hc == nil {
		return ctx
	}
	return context.WithValue(ctx, oauth2.HTTPClient, hc)
}

// RefreshGrant describes the refresh token grant with a token that may
// rotate: the newest one is kept in Store under Account.
type RefreshGrant struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// Account is the key in Store.
	Account string
	// Initial is used when the store holds no token for Account yet.
	Initial    string
	Store      *Store
	HTTPClient *http.Client
}

// NewRefreshGrant builds a Fetcher that redeems the newest refresh token and
// saves a rotated one before the access token is handed out, so a restart
// never reuses a spent refresh token.
func NewRefreshGrant(r RefreshGrant) Fetcher {
	cfg := &oauth2.Config{
		ClientID: r.ClientID, ClientSecret: r.ClientSecret, Scopes: r.Scopes,
		Endpoint: oauth2.Endpoint{TokenURL: r.TokenURL},
	}
	var mu sync.Mutex // one redemption at a time: a rotated token is single use
	return FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		mu.Lock()
		defer mu.Unlock()
		rt := r.Initial
		if e, ok := r.Store.Get(r.Account); ok && e.RefreshToken != "" {
			rt = e.RefreshToken
		}
		if rt == "" {
			return nil, &OAuthError{Code: "invalid_grant", Description: "no refresh token stored for " + r.Account + ": run mailproxy token add"}
		}
		tok, err := cfg.TokenSource(withClient(ctx, r.HTTPClient), &oauth2.Token{RefreshToken: rt}).Token()
		if err != nil {
			return nil, cleanRetrieveError(err)
		}
		if tok.RefreshToken != "" && tok.RefreshToken != rt {
			err := r.Store.Put(r.Account, Entry{RefreshToken: tok.RefreshToken, Updated: time.Now()})
			if err != nil {
				return nil, fmt.Errorf("saving rotated refresh token: %w", err)
			}
		}
		return tok, nil
	})
}

// cleanRetrieveError keeps the OAuth error code and description and drops
// the raw response body.
func cleanRetrieveError(err error) error {
	if err == nil {
		return nil
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return err
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" { // x/oauth2/jwt does not parse the body
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &e) != nil || e.Error == "" {
			return fmt.Errorf("token endpoint answered HTTP %d", status)
		}
		code, desc = e.Error, e.Description
	}
	return &OAuthError{Status: status, Code: code, Description: desc}
}
