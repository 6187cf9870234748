package config

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
	GrantRefreshToken      = "refresh_token"
)

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

	// google_service_account
	// KeyFile is the service account's JSON key, or a legacy .p12 key.
	KeyFile string `yaml:"key_file"`
	// ServiceAccount is the service account's e-mail (needed with .p12).
	ServiceAccount string `yaml:"service_account"`
	// Impersonate is the Workspace user (defaults to the profile's mailbox).
	Impersonate string `yaml:"impersonate"`

	// oauth2 (and overrides for the others)
	TokenURL string   `yaml:"token_url"`
	Scopes   []string `yaml:"scopes"`
	Grant    string   `yaml:"grant"`
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

// UsesTokens reports whether the credential yields OAuth 2.0 tokens (all
// but basic).
func (c *Credentials) UsesTokens() bool { return c.Type != CredBasic }
