package tokens

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"golang.org/x/oauth2"
	"software.sslmate.com/src/go-pkcs12"
)

// MicrosoftConfidential describes a Microsoft 365 (Entra ID) confidential
// app that gets app-only tokens by client credentials.
type MicrosoftConfidential struct {
	// Authority is the cloud's login host URL, e.g. https://login.microsoftonline.com.
	Authority string
	TenantID  string
	ClientID  string
	// Secret, or CertFile (PEM with key, or PFX/P12) and CertPassword.
	Secret       string
	CertFile     string
	CertPassword string
	Scopes       []string
	HTTPClient   *http.Client
}

// NewMicrosoftConfidential builds a Fetcher backed by MSAL Go.
func NewMicrosoftConfidential(m MicrosoftConfidential) (Fetcher, error) {
	var cred confidential.Credential
	var err error
	if m.CertFile != "" {
		certs, key, lerr := loadCertificate(m.CertFile, m.CertPassword)
		if lerr != nil {
			return nil, lerr
		}
		cred, err = confidential.NewCredFromCert(certs, key)
	} else {
		cred, err = confidential.NewCredFromSecret(m.Secret)
	}
	if err != nil {
		return nil, fmt.Errorf("microsoft365 credential: %w", err)
	}
	authority := strings.TrimRight(m.Authority, "/") + "/" + m.TenantID
	// MSAL answers from its own cache first; the Cache around this Fetcher
	// is the one cache, and a token the upstream refused must not come back.
	opts := []confidential.Option{confidential.WithInstanceDiscovery(false), confidential.WithCache(noCache{})}
	if m.HTTPClient != nil {
		opts = append(opts, confidential.WithHTTPClient(m.HTTPClient))
	}
	client, err := confidential.New(authority, m.ClientID, cred, opts...)
	if err != nil {
		return nil, fmt.Errorf("microsoft365 authority %s: %w", authority, err)
	}
	scopes := m.Scopes
	return FetcherFunc(func(ctx context.Context) (*oauth2.Token, error) {
		res, err := client.AcquireTokenByCredential(ctx, scopes)
		if err != nil {
			return nil, fromMSAL(err)
		}
		return &oauth2.Token{AccessToken: res.AccessToken, TokenType: "Bearer", Expiry: res.ExpiresOn}, nil
	}), nil
}

// noCache keeps MSAL's token cache empty: every Fetch asks the endpoint.
type noCache struct{}

func (noCache) Replace(_ context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	return u.Unmarshal([]byte("{}"))
}

func (noCache) Export(context.Context, cache.Marshaler, cache.ExportHints) error { return nil }

// loadCertificate reads a PEM (certificate + unencrypted key) or a PFX/P12.
func loadCertificate(path, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	if strings.Contains(string(data), "-----BEGIN") {
		certs, key, err := confidential.CertFromPEM(data, password)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %s: %w", path, err)
		}
		return certs, key, nil
	}
	key, cert, cas, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s (PFX): %w; check certificate_password", path, err)
	}
	return append([]*x509.Certificate{cert}, cas...), key, nil
}

// OAuthError is an error response from a token endpoint (RFC 6749 §5.2),
// with Microsoft's AADSTS code kept in the description.
type OAuthError struct {
	Status      int
	Code        string
	Description string
}

func (e *OAuthError) Error() string {
	d, _, _ := strings.Cut(e.Description, "\r\n")
	d, _, _ = strings.Cut(d, "\n")
	if e.Status != 0 {
		return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, d)
	}
	return e.Code + ": " + d
}

// OAuthErrorCode is the RFC 6749 error code.
func (e *OAuthError) OAuthErrorCode() string { return e.Code }

// fromMSAL turns MSAL's "http call(...) error: reply status code was N:\n{json}"
// into an OAuthError when the body is an OAuth error.
func fromMSAL(err error) error {
	var ce msalerrors.CallErr
	if !errors.As(err, &ce) {
		return err
	}
	_, body, _ := strings.Cut(ce.Err.Error(), "\n")
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
		status := 0
		if ce.Resp != nil {
			status = ce.Resp.StatusCode
		}
		return fmt.Errorf("token endpoint answered HTTP %d", status)
	}
	oe := &OAuthError{Code: e.Error, Description: e.Description}
	if ce.Resp != nil {
		oe.Status = ce.Resp.StatusCode
	}
	return oe
}
