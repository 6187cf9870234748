package tokens

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
	"software.sslmate.com/src/go-pkcs12"
)

// GoogleServiceAccount describes a service account with domain-wide
// delegation acting as a Workspace user.
type GoogleServiceAccount struct {
	// KeyFile is the JSON key, or a legacy .p12 key (password "notasecret").
	KeyFile string
	// Email is the service account's address; needed with .p12 keys.
	Email string
	// Subject is the Workspace user to impersonate.
	Subject string
	Scopes  []string
	// TokenURL overrides the key's token_uri (and the default for .p12).
	TokenURL   string
	HTTPClient *http.Client
}

// p12Password is the fixed password of Google's legacy .p12 keys.
const p12Password = "notasecret"

// NewGoogleServiceAccount builds a Fetcher that signs a JWT (RS256) with the
// service account key and exchanges it for an access token.
func NewGoogleServiceAccount(g GoogleServiceAccount) (Fetcher, error) {
	data, err := os.ReadFile(g.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("google service account key: %w", err)
	}
	var cfg *jwt.Config
	if strings.EqualFold(filepath.Ext(g.KeyFile), ".p12") {
		key, _, err := pkcs12.Decode(data, p12Password)
		if err != nil {
			return nil, fmt.Errorf("google service account key %s: %w (a .p12 from Google has the password %q)", g.KeyFile, err, p12Password)
		}
		rsaKey, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("google service account key %s: not an RSA key", g.KeyFile)
		}
		der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
		if err != nil {
			return nil, err
		}
		cfg = &jwt.Config{
			Email:      g.Email,
			PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
			Scopes:     g.Scopes,
			TokenURL:   google.JWTTokenURL,
		}
	} else {
		cfg, err = google.JWTConfigFromJSON(data, g.Scopes...)
		if err != nil {
			return nil, fmt.Errorf("google service account key %s: %w", g.KeyFile, err)
		}
		if g.Email != "" && g.Email != cfg.Email {
			return nil, fmt.Errorf("google service account key %s is for %s, not %s", g.KeyFile, cfg.Email, g.Email)
		}
	}
	if g.TokenURL != "" {
		cfg.TokenURL = g.TokenURL
	}
	cfg.Subject = g.Subject
	return FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		if g.HTTPClient != nil {
			ctx = context.WithValue(ctx, oauth2.HTTPClient, g.HTTPClient)
		}
		tok, err := cfg.TokenSource(ctx).Token()
		return tok, cleanRetrieveError(err)
	}), nil
}
