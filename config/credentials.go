package config

import "strings"

// Credential types.
const (
	// CredMicrosoft365 is a Microsoft 365 (Entra ID) confidential app:
	// client secret or certificate, app-only (client credentials).
	CredMicrosoft365 = "microsoft365"
	// CredGoogleServiceAccount is a Google service account with domain-wide
	// delegation that impersonates a Workspace user (JSON or P12 key).
	CredGoogleServiceAccount = "google_service_account"
	// CredOAuth2 is any OAuth 2.0 provider: client credentials or a stored
	// refresh token.
	CredOAuth2 = "oauth2"
	// CredBasic is a login and password for upstreams that still take them.
	CredBasic = "basic"
)

// OAuth2 grants for CredOAuth2.
const (
	GrantClientCredentials = "client_credentials"
	// GrantRefreshToken is delegated access: a person signs in once
	// (mailproxy token add, or the admin page), or a refresh_token is given.
	GrantRefreshToken = "refresh_token"
)

// Microsoft 365 app kinds (CMO's IntegrationType).
const (
	AppConfidential = "confidential"
	AppPublic       = "public"
)

// Provider presets for CredOAuth2: the URLs, scopes and parameters of
// providers whose mail takes delegated OAuth 2.0.
const (
	ProviderMicrosoft = "microsoft"
	ProviderGoogle    = "google"
)

// DefaultMicrosoftDelegatedScopes are what a signed-in person grants for
// IMAP, POP and SMTP, plus a refresh token and the account's name.
var DefaultMicrosoftDelegatedScopes = []string{
	"https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All",
	"https://outlook.office.com/SMTP.Send", "offline_access", "openid", "profile",
}

// Defaults documented in the README.
const (
	DefaultMicrosoftAuthority = "https://login.microsoftonline.com"
	DefaultMicrosoftScope     = "https://outlook.office365.com/.default"
	DefaultGoogleTokenURL     = "https://oauth2.googleapis.com/token"
	DefaultGoogleScope        = "https://mail.google.com/"
)

// Credentials is how a profile authenticates upstream. Which fields apply
// depends on Type.
type Credentials struct {
	Type string `yaml:"type"`

	// microsoft365 and oauth2
	TenantID     string `yaml:"tenant_id"`
	ClientID     string `yaml:"client_id"`
	ClientSecret Secret `yaml:"client_secret"`
	// CertificateFile is a PEM or PFX/P12 file with the certificate and its
	// private key (microsoft365).
	CertificateFile     string `yaml:"certificate_file"`
	CertificatePassword Secret `yaml:"certificate_password"`
	// Authority is the Entra ID host URL (national clouds, tests).
	Authority string `yaml:"authority"`
	// App is confidential (default: app-only) or public (delegated: a
	// person signs in once with mailproxy token add).
	App string `yaml:"app"`

	// google_service_account
	// KeyFile is the service account's JSON key, or a legacy .p12 key.
	KeyFile string `yaml:"key_file"`
	// ServiceAccount is the service account's e-mail (needed with .p12).
	ServiceAccount string `yaml:"service_account"`
	// Impersonate is the Workspace user (defaults to the profile's mailbox).
	Impersonate string `yaml:"impersonate"`

	// oauth2 (and overrides for the others)
	// Provider fills in a known provider's URLs, scopes and parameters:
	// microsoft or google.
	Provider string `yaml:"provider"`
	// AuthorizeURL and DeviceURL are where a person signs in (browser, or
	// device code). "{tenant}" in any URL is replaced by tenant_id.
	AuthorizeURL string `yaml:"authorize_url"`
	DeviceURL    string `yaml:"device_url"`
	// RedirectURL is the registered redirect for the browser sign-in
	// (default http://localhost; a non-loopback one means pasting the URL
	// the browser ends on).
	RedirectURL string `yaml:"redirect_url"`
	// PKCE sends a code challenge (default true).
	PKCE *bool `yaml:"pkce"`
	// Params are extra authorize parameters, e.g. access_type: offline.
	Params   map[string]string `yaml:"params"`
	TokenURL string            `yaml:"token_url"`
	Scopes   []string          `yaml:"scopes"`
	Grant    string            `yaml:"grant"`
	// RefreshToken seeds the token store; rotated tokens are kept there.
	RefreshToken Secret `yaml:"refresh_token"`
	// Account is who the refresh token belongs to (default: the profile's
	// mailbox). It differs from the mailbox when a delegate reads a shared
	// mailbox; profiles with the same account share one token.
	Account string `yaml:"account"`

	// basic
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// Delegated reports whether a person signs in to grant the credential.
func (c *Credentials) Delegated() bool {
	return (c.Type == CredMicrosoft365 && c.App == AppPublic) ||
		(c.Type == CredOAuth2 && c.Grant == GrantRefreshToken)
}

// UsesTokens reports whether the credential yields OAuth 2.0 tokens (all
// but basic).
func (c *Credentials) UsesTokens() bool { return c.Type != CredBasic }

// applyProvider fills what the file leaves out from the provider preset,
// then replaces {tenant} in the URLs.
func (c *Credentials) applyProvider(graph bool) {
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	switch c.Provider {
	case ProviderMicrosoft:
		// learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow, v2-oauth2-device-code
		base := strings.TrimRight(c.Authority, "/")
		if base == "" {
			base = DefaultMicrosoftAuthority
		}
		set(&c.TenantID, "organizations")
		set(&c.AuthorizeURL, base+"/{tenant}/oauth2/v2.0/authorize")
		set(&c.TokenURL, base+"/{tenant}/oauth2/v2.0/token")
		set(&c.DeviceURL, base+"/{tenant}/oauth2/v2.0/devicecode")
		if len(c.Scopes) == 0 {
			c.Scopes = DefaultMicrosoftDelegatedScopes
			if graph {
				c.Scopes = DefaultGraphDelegatedScopes
			}
		}
	case ProviderGoogle:
		// developers.google.com/identity/protocols/oauth2/native-app; Gmail's
		// scope is not allowed in the device flow, so there is no device_url.
		set(&c.AuthorizeURL, "https://accounts.google.com/o/oauth2/v2/auth")
		set(&c.TokenURL, DefaultGoogleTokenURL)
		if len(c.Scopes) == 0 {
			c.Scopes = []string{DefaultGoogleScope, "openid", "email"}
		}
		if c.Params == nil {
			c.Params = map[string]string{"access_type": "offline", "prompt": "consent"}
		}
	}
	if c.TenantID != "" {
		for _, u := range []*string{&c.AuthorizeURL, &c.TokenURL, &c.DeviceURL} {
			*u = strings.ReplaceAll(*u, "{tenant}", c.TenantID)
		}
	}
}
