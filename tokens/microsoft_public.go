package tokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"
	"golang.org/x/oauth2"
)

// MicrosoftApp is one Microsoft 365 public client app (delegated: a person
// signs in, CMO's IntegrationType=Public) and its MSAL Go client. MSAL keeps
// its token cache, refresh tokens included, in the Store through its cache
// serialisation interface; the accounts signed in to the app share it, and
// so do the profiles that use them: one MSAL client per app, whose lock
// orders the reads and writes of that cache within the process.
type MicrosoftApp struct {
	ClientID string
	client   public.Client
	name     string // of the MSAL cache in the store
	store    *Vault
	cache    *msalCache
}

// NewMicrosoftApp builds the MSAL public client for clientID at
// authority/tenantID.
func NewMicrosoftApp(authority, tenantID, clientID string, store *Vault, hc *http.Client) (*MicrosoftApp, error) {
	if store == nil {
		return nil, errors.New("a token_store is needed to keep the signed-in accounts")
	}
	authority = strings.TrimRight(authority, "/") + "/" + tenantID
	a := &MicrosoftApp{ClientID: clientID, name: "msal:" + authority + "/" + clientID, store: store}
	a.cache = &msalCache{store: store, name: a.name}
	opts := []public.Option{public.WithAuthority(authority), public.WithInstanceDiscovery(false), public.WithCache(a.cache)}
	if hc != nil {
		opts = append(opts, public.WithHTTPClient(hc))
	}
	c, err := public.New(clientID, opts...)
	if err != nil {
		return nil, fmt.Errorf("microsoft365 authority %s: %w", authority, err)
	}
	a.client = c
	return a, nil
}

// MicrosoftPublic is one account of a MicrosoftApp with the scopes a
// profile asks for.
type MicrosoftPublic struct {
	*MicrosoftApp
	Scopes []string
	// Account is the profile's account (its user principal name).
	Account string
}

// For is the app's Delegated credential for account and scopes.
func (a *MicrosoftApp) For(account string, scopes []string) *MicrosoftPublic {
	return &MicrosoftPublic{MicrosoftApp: a, Scopes: scopes, Account: account}
}

// Key is the account's entry in the store (what token list shows; the
// refresh token itself is in MSAL's cache).
func (m *MicrosoftPublic) Key(account string) string {
	return m.ClientID + "/" + strings.ToLower(account)
}

// Fetch gets a token for the profile's account from MSAL's cache, which
// redeems (and rotates) the refresh token when the access token is old. It
// holds the store's lock throughout, so no other process redeems the same
// refresh token meanwhile, and reads the cache another process may have
// refreshed first.
func (m *MicrosoftPublic) Fetch(ctx context.Context) (*oauth2.Token, error) {
	key := m.Key(m.Account)
	var tok *oauth2.Token
	err := m.store.Redeem(ctx, func(ctx context.Context) error {
		acc, err := m.account(ctx, m.Account)
		if err != nil {
			return err
		}
		// MSAL decides itself whether to redeem: leased every time.
		if err := m.store.Claim(ctx); err != nil {
			return err
		}
		res, err := m.client.AcquireTokenSilent(ctx, m.Scopes, public.WithSilentAccount(acc))
		if err != nil {
			err = fromMSAL(err)
			if e, ok := m.store.Peek(key); ok && e.LastError != err.Error() {
				_ = m.store.Update(ctx, key, func(e *Entry) { e.LastError = err.Error() })
			}
			return err
		}
		m.store.Update(ctx, key, func(e *Entry) {
			e.Provider, e.Scopes = m.name, m.Scopes
			e.Updated, e.Expiry, e.LastError = time.Now(), res.ExpiresOn, ""
		})
		tok = &oauth2.Token{AccessToken: res.AccessToken, TokenType: "Bearer", Expiry: res.ExpiresOn}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// Reject keeps MSAL from handing out tok again: the upstream refused it,
// so the next Fetch redeems the refresh token for a new one.
func (m *MicrosoftPublic) Reject(tok *oauth2.Token) { m.cache.reject(tok.AccessToken) }

// SignedIn reports whether the profile's account has signed in (from
// memory: no I/O).
func (m *MicrosoftPublic) SignedIn() bool {
	_, ok := m.store.Peek(m.Key(m.Account))
	return ok
}

func (m *MicrosoftPublic) account(ctx context.Context, name string) (public.Account, error) {
	accounts, err := m.client.Accounts(ctx)
	if err != nil {
		return public.Account{}, err
	}
	for _, a := range accounts {
		if strings.EqualFold(a.PreferredUsername, name) {
			return a, nil
		}
	}
	return public.Account{}, &NotSignedInError{Account: name}
}

// AuthCodeURL implements Delegated. MSAL builds the URL; state and the PKCE
// challenge are added, as MSAL's own interactive flow does.
func (m *MicrosoftPublic) AuthCodeURL(ctx context.Context, account, redirectURI, state, verifier string) (string, error) {
	var opts []public.AuthCodeURLOption
	if account != "" {
		opts = append(opts, public.WithLoginHint(account))
	}
	// MSAL's own interactive flow adds these; without offline_access
	// there is no refresh token.
	scopes := append(slices.Clone(m.Scopes), "openid", "profile", "offline_access")
	slices.Sort(scopes)
	u, err := m.client.AuthCodeURL(ctx, m.ClientID, redirectURI, slices.Compact(scopes), opts...)
	if err != nil {
		return "", fromMSAL(err)
	}
	return withParams(u, map[string]string{"state": state, "code_challenge": oauth2.S256ChallengeFromVerifier(verifier),
		"code_challenge_method": "S256", "prompt": "select_account"})
}

// Redeem implements Delegated.
func (m *MicrosoftPublic) Redeem(ctx context.Context, _, code, redirectURI, verifier string) (string, error) {
	res, err := m.client.AcquireTokenByAuthCode(ctx, code, redirectURI, m.Scopes, public.WithChallenge(verifier))
	if err != nil {
		return "", fromMSAL(err)
	}
	return m.signedIn(ctx, res)
}

// DeviceCode implements Delegated.
func (m *MicrosoftPublic) DeviceCode(ctx context.Context, _ string) (*DeviceAuth, error) {
	dc, err := m.client.AcquireTokenByDeviceCode(ctx, m.Scopes)
	if err != nil {
		return nil, fromMSAL(err)
	}
	r := dc.Result
	return &DeviceAuth{UserCode: r.UserCode, VerificationURI: r.VerificationURL, Expires: r.ExpiresOn, Message: r.Message,
		wait: func(ctx context.Context) (string, error) {
			res, err := dc.AuthenticationResult(ctx)
			if err != nil {
				return "", fromMSAL(err)
			}
			return m.signedIn(ctx, res)
		}}, nil
}

func (m *MicrosoftPublic) signedIn(ctx context.Context, res public.AuthResult) (string, error) {
	who := res.Account.PreferredUsername
	if who == "" {
		return "", errors.New("the sign-in returned no account name (preferred_username)")
	}
	now := time.Now()
	// This also saves what MSAL staged (the new account's refresh token).
	err := m.store.Put(ctx, m.Key(who), Entry{Provider: m.name, Scopes: m.Scopes, Added: now, Updated: now, Expiry: res.ExpiresOn})
	return who, err
}

// Remove implements Delegated.
func (m *MicrosoftPublic) Remove(ctx context.Context, account string) (bool, error) {
	acc, err := m.account(ctx, account)
	had := err == nil
	if had {
		if err := m.client.RemoveAccount(ctx, acc); err != nil {
			return false, err
		}
	}
	gone, err := m.store.Remove(ctx, m.Key(account))
	return had || gone, err
}

// msalCache keeps one MSAL cache in the Vault. Replace reads the copy in
// memory (the store is read again only when another process changed it);
// Export stages MSAL's cache at once, so a rotated refresh token is never
// lost, merged (mergeMSAL) with what the store holds when it is written,
// so another process's changes since Replace are kept too. MSAL calls them
// under its client's lock, Replace right before it writes and Export right
// after; Export never waits for the store's lock, which the caller (Fetch,
// through Redeem; signedIn; Remove) takes to save it.
type msalCache struct {
	store *Vault
	name  string

	mu       sync.Mutex
	base     []byte          // what the last Replace gave MSAL
	rejected map[string]bool // access tokens an upstream refused
}

// reject hides the access token secret from MSAL from now on.
func (c *msalCache) reject(secret string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected == nil {
		c.rejected = map[string]bool{}
	}
	c.rejected[secret] = true
}

func (c *msalCache) Replace(ctx context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	data := c.store.Cache(ctx, c.name)
	c.mu.Lock()
	data = withoutAccessTokens(data, c.rejected)
	c.base = data
	c.mu.Unlock()
	if data == nil {
		data = []byte("{}")
	}
	return u.Unmarshal(data)
}

func (c *msalCache) Export(_ context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	ours, err := m.Marshal()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	base := c.base
	written, err := c.store.StageCache(c.name, func(theirs []byte) ([]byte, error) {
		if bytes.Equal(theirs, base) {
			return ours, nil
		}
		return mergeMSAL(base, ours, theirs)
	})
	if err == nil {
		c.base = written
	}
	return err
}
