package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

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
