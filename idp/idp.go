// Package idp is a small OAuth 2.0 token issuer that answers like the
// Microsoft identity platform v2.0 token endpoint and Google's OAuth 2.0
// token endpoint, and validates the tokens it issued (RFC 7662
// introspection, for Dovecot's oauth2 passdb).
//
// It is what mailproxy's demo runs in-process and what the tests point
// every credential at, since the real endpoints cannot be reached from
// here. Status codes and error bodies follow the providers' documentation:
//   - Microsoft: learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
//     ("Error response": 400/401 with error, error_description "AADSTS…",
//     error_codes, timestamp, trace_id, correlation_id) and the AADSTS codes
//     in reference-error-codes (7000215 invalid secret, 700016 unknown app,
//     90002 unknown tenant, 700027 bad assertion signature, 70011 bad scope).
//   - Google: developers.google.com/identity/protocols/oauth2/service-account
//     (JWT claims iss, scope, aud, exp, iat, sub; "invalid_grant" /
//     "Invalid JWT Signature.", "unauthorized_client" for missing
//     domain-wide delegation).
//   - RFC 6749 §5.2 for everything else.
//
// It must never be used to authenticate anything real.
package idp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MicrosoftApp is a registered confidential app in a tenant.
type MicrosoftApp struct {
	Tenant   string
	ClientID string
	// Secret, or Cert whose key signs client assertions.
	Secret string
	Cert   *x509.Certificate
	// Mailbox is the mailbox the app's tokens are good for.
	Mailbox string
	// Roles are the application permissions granted to the app (for
	// Graph: Mail.Send, Mail.ReadWrite...); app-only tokens carry them.
	Roles []string
}

// ServiceAccount is a Google service account allowed domain-wide delegation
// for Scopes.
type ServiceAccount struct {
	Email  string
	Key    *rsa.PublicKey
	Scopes []string
}

// Client is a generic OAuth 2.0 client.
type Client struct {
	ID, Secret string
	// Mailbox is what client-credentials tokens are good for.
	Mailbox string
	// Roles are what its client-credentials tokens may do at a resource
	// server (the Graph double).
	Roles []string
}

// Server is the fake issuer. Register identities, then serve it over HTTPS
// (token endpoints) and, for Dovecot, HTTP (/introspect).
type Server struct {
	// TTL of issued access tokens (default 1 hour).
	TTL time.Duration
	// RotateRefresh makes every refresh return a new refresh token and
	// revoke the old one, as Microsoft does.
	RotateRefresh bool
	// URL is the HTTPS base URL, used as the Google token audience.
	URL string
	// DeviceInterval is the device code polling interval it asks for
	// (default 5 s); DeviceTTL how long a device code lives (default 15 min).
	DeviceInterval time.Duration
	DeviceTTL      time.Duration
	// DeviceSlowDown answers that many device code polls slow_down, as a
	// busy server does (RFC 8628 §3.5: the client adds 5 s to its interval).
	DeviceSlowDown int

	mu      sync.Mutex
	apps    map[string]MicrosoftApp // tenant/clientID
	sas     map[string]ServiceAccount
	clients map[string]Client
	refresh map[string]refreshGrant
	public  map[string]PublicApp
	users   map[string]string // mailbox -> password
	codes   map[string]*authCode
	devices map[string]*deviceGrant
	polls   []time.Time // device code polls
	access  map[string]issued
	faults  []int // status codes for the next token requests
	down    bool
	// clientFaults apply to one client's token requests.
	clientFaults map[string]ClientFault
	perClient    map[string]int64  // token requests by client
	spent        map[string]string // refresh tokens rotated away, to their family
	reuses       int64             // redemptions of a spent refresh token
	revoked      map[string]bool   // families revoked on reuse
	held         map[string]string // remote address -> client, of requests held by a Delay
	redemptions  map[string]int64  // refresh tokens redeemed, by client
	lastJWT      map[string]any
	lastJWTHd    map[string]any

	tokenRequests  atomic.Int64
	introspections atomic.Int64
	devicePolls    atomic.Int64
}

type issued struct {
	mailbox string
	expiry  time.Time
	grant   Grant
}

// Grant is what an access token says, as a resource server (the Graph
// double) reads it from the token's claims.
type Grant struct {
	// Mailbox is the user a delegated token is for (app-only: the app's
	// configured mailbox, which a resource server ignores).
	Mailbox  string
	ClientID string
	// AppOnly marks a client credentials token (Microsoft: no scp, roles).
	AppOnly bool
	// Scope is what was asked for (delegated: the scp claim).
	Scope string
	// Roles are an app-only token's application permissions.
	Roles []string
}

// Lookup reports what token grants, while it is valid.
func (s *Server) Lookup(token string) (Grant, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.access[token]
	if !ok || time.Now().After(t.expiry) {
		return Grant{}, false
	}
	g := t.grant
	g.Mailbox = t.mailbox
	return g, true
}

// New returns an empty Server.
func New() *Server {
	return &Server{
		TTL:     time.Hour,
		apps:    map[string]MicrosoftApp{},
		sas:     map[string]ServiceAccount{},
		clients: map[string]Client{},
		refresh: map[string]refreshGrant{},
		access:  map[string]issued{},
		public:  map[string]PublicApp{},
		users:   map[string]string{},
		codes:   map[string]*authCode{},
		devices: map[string]*deviceGrant{},

		clientFaults: map[string]ClientFault{},
		perClient:    map[string]int64{},
		spent:        map[string]string{},
		revoked:      map[string]bool{},
		held:         map[string]string{},
		redemptions:  map[string]int64{},
	}
}

// ClientFault is what one client's token requests meet.
type ClientFault struct {
	// Down closes the connection without an answer.
	Down bool
	// Delay holds each request this long before it is answered (a token
	// endpoint that hangs, or a slow one).
	Delay time.Duration
}

// SetClientFault makes clientID's token requests meet f (the zero
// ClientFault clears it). Other clients are not affected, so tests that
// break one client can run beside others.
func (s *Server) SetClientFault(clientID string, f ClientFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientFaults[clientID] = f
}

// Held lists the remote addresses of clientID's token requests that a
// Delay holds now: which process is in the middle of a refresh.
func (s *Server) Held(clientID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for addr, c := range s.held {
		if c == clientID {
			out = append(out, addr)
		}
	}
	return out
}

// TokenRequestsFor counts clientID's token requests.
func (s *Server) TokenRequestsFor(clientID string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perClient[clientID]
}

// RefreshReuses counts redemptions of a refresh token that rotation had
// already replaced: what a provider with reuse detection (RFC 9700
// §4.14.2) answers by revoking the whole grant.
func (s *Server) RefreshReuses() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reuses
}

// ExpireAccess ends every access token issued for mailbox, as their expiry
// would: the next upstream login refuses them, and mailproxy must redeem
// its refresh token.
func (s *Server) ExpireAccess(mailbox string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, a := range s.access {
		if a.mailbox == mailbox {
			delete(s.access, tok)
		}
	}
}

// AddMicrosoftApp registers a confidential app.
func (s *Server) AddMicrosoftApp(a MicrosoftApp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[a.Tenant+"/"+a.ClientID] = a
}

// AddServiceAccount registers a Google service account.
func (s *Server) AddServiceAccount(a ServiceAccount) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sas[a.Email] = a
}

// AddClient registers a generic client.
func (s *Server) AddClient(c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c
}

// AddRefreshToken makes rt redeemable for mailbox.
func (s *Server) AddRefreshToken(rt, mailbox string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[rt] = refreshGrant{mailbox: mailbox, family: rt}
}

// IssueToken mints an access token for mailbox directly.
func (s *Server) IssueToken(mailbox string, ttl time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mint(mailbox, ttl)
}

func (s *Server) mint(mailbox string, ttl time.Duration) string {
	return s.mintGrant(Grant{Mailbox: mailbox}, ttl)
}

func (s *Server) mintGrant(g Grant, ttl time.Duration) string {
	tok := "at-" + randomString(24)
	s.access[tok] = issued{mailbox: g.Mailbox, expiry: time.Now().Add(ttl), grant: g}
	return tok
}

// Revoke makes token (access or refresh) invalid.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.access, token)
	delete(s.refresh, token)
}

// FailNext makes the next len(statuses) token requests fail with those HTTP
// statuses (temporarily_unavailable bodies).
func (s *Server) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, statuses...)
}

// ClearFaults forgets faults not yet used.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetDown makes token requests fail at the connection level (connection
// closed without an answer) until called with false.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// TokenRequests counts requests to the token endpoints.
func (s *Server) TokenRequests() int64 { return s.tokenRequests.Load() }

// Introspections counts token validations (one per upstream login).
func (s *Server) Introspections() int64 { return s.introspections.Load() }

// LastJWT returns the header and claims of the last JWT assertion received.
func (s *Server) LastJWT() (header, claims map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastJWTHd, s.lastJWT
}

// Validate reports the mailbox an access token is good for.
func (s *Server) Validate(token string) (mailbox string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.access[token]
	if !ok || time.Now().After(t.expiry) {
		return "", false
	}
	return t.mailbox, true
}

// ServeHTTP routes to the token, discovery and introspection endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/introspect" && r.Method == http.MethodPost:
		s.introspect(w, r)
	case strings.HasSuffix(path, "/v2.0/.well-known/openid-configuration"):
		s.discovery(w, r)
	case strings.HasSuffix(path, "/oauth2/v2.0/authorize"):
		s.authorize(w, r, strings.Trim(strings.TrimSuffix(path, "/oauth2/v2.0/authorize"), "/"))
	case path == "/authorize":
		s.authorize(w, r, "")
	case strings.HasSuffix(path, "/oauth2/v2.0/devicecode") && r.Method == http.MethodPost:
		s.deviceCode(w, r, true)
	case path == "/device" && r.Method == http.MethodPost:
		s.deviceCode(w, r, false)
	case path == "/devicelogin":
		s.deviceLogin(w, r)
	case strings.HasSuffix(path, "/oauth2/v2.0/token") && r.Method == http.MethodPost:
		if s.fault(w, r) {
			return
		}
		s.microsoftToken(w, r, strings.Trim(strings.TrimSuffix(path, "/oauth2/v2.0/token"), "/"))
	case path == "/token" && r.Method == http.MethodPost:
		if s.fault(w, r) {
			return
		}
		s.genericToken(w, r)
	default:
		http.NotFound(w, r)
	}
}

// fault applies SetDown, FailNext and the client's fault; it counts the
// request either way.
func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	s.tokenRequests.Add(1)
	r.ParseForm()
	clientID := r.PostForm.Get("client_id")
	if u, _, ok := r.BasicAuth(); ok {
		clientID = u
	}
	s.mu.Lock()
	s.perClient[clientID]++
	cf := s.clientFaults[clientID]
	down := s.down || cf.Down
	status := 0
	if !down && len(s.faults) > 0 {
		status, s.faults = s.faults[0], s.faults[1:]
	}
	s.mu.Unlock()
	if cf.Delay > 0 {
		s.mu.Lock()
		s.held[r.RemoteAddr] = clientID
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.held, r.RemoteAddr)
			s.mu.Unlock()
		}()
		// A request whose client went away meanwhile is not processed:
		// nothing is redeemed or rotated for it.
		select {
		case <-time.After(cf.Delay):
		case <-r.Context().Done():
			return true
		}
	}
	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return true
			}
		}
		status = http.StatusServiceUnavailable
	}
	if status == 0 {
		return false
	}
	writeJSON(w, status, map[string]any{"error": "temporarily_unavailable", "error_description": "The service is temporarily unavailable (injected fault)."})
	return true
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	tenant := strings.Trim(strings.TrimSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"), "/")
	base := "https://" + r.Host + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"issuer":                                "https://" + r.Host + "/" + tenant + "/v2.0",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"tenant_region_scope":                   "EU",
	})
}

// aadError writes Microsoft's error body (v2-oauth2-client-creds-grant-flow, "Error response").
func aadError(w http.ResponseWriter, status int, code string, aadsts int, msg string) {
	trace, corr := randomUUID(), randomUUID()
	now := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	writeJSON(w, status, map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			aadsts, msg, trace, corr, now),
		"error_codes":    []int{aadsts},
		"timestamp":      now,
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}

func (s *Server) microsoftToken(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil {
		aadError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		s.delegatedToken(w, r, true)
		return
	}
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	s.mu.Lock()
	app, ok := s.apps[tenant+"/"+clientID]
	tenantKnown := false
	for k := range s.apps {
		if strings.HasPrefix(k, tenant+"/") {
			tenantKnown = true
		}
	}
	s.mu.Unlock()
	switch {
	case !tenantKnown:
		aadError(w, 400, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	case !ok:
		aadError(w, 400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, tenant))
		return
	}
	// MSAL adds openid, profile and offline_access; the resource scope must end in /.default.
	scope := f.Get("scope")
	resource := ""
	for _, sc := range strings.Fields(scope) {
		if sc != "openid" && sc != "profile" && sc != "offline_access" {
			resource = sc
		}
	}
	if !strings.HasSuffix(resource, "/.default") {
		aadError(w, 400, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope))
		return
	}
	if assertion := f.Get("client_assertion"); assertion != "" {
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || app.Cert == nil {
			aadError(w, 401, "invalid_client", 700027, "Client assertion failed signature validation.")
			return
		}
		hd, claims, err := verifyJWT(assertion, app.Cert.PublicKey.(*rsa.PublicKey))
		s.recordJWT(hd, claims)
		aud := "https://" + r.Host + r.URL.Path
		if err != nil || claims["iss"] != clientID || claims["sub"] != clientID || claims["aud"] != aud || expired(claims) {
			aadError(w, 401, "invalid_client", 700027, "Client assertion failed signature validation.")
			return
		}
		sum := sha256.Sum256(app.Cert.Raw)
		if hd["x5t#S256"] != base64.StdEncoding.EncodeToString(sum[:]) && hd["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
			aadError(w, 401, "invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]")
			return
		}
	} else if app.Secret == "" || secret != app.Secret {
		aadError(w, 401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"+clientID+"'.")
		return
	}
	s.mu.Lock()
	tok := s.mintGrant(Grant{Mailbox: app.Mailbox, ClientID: clientID, AppOnly: true, Scope: resource, Roles: app.Roles}, s.TTL)
	s.mu.Unlock()
	secs := int(s.TTL / time.Second)
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

func (s *Server) genericToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "malformed form body")
		return
	}
	f := r.PostForm
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	switch f.Get("grant_type") {
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		s.jwtBearer(w, r, f.Get("assertion"))
	case "client_credentials":
		s.mu.Lock()
		c, ok := s.clients[clientID]
		s.mu.Unlock()
		if !ok || c.Secret != secret {
			w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
			oauthError(w, 401, "invalid_client", "Client authentication failed.")
			return
		}
		s.mu.Lock()
		tok := s.mintGrant(Grant{Mailbox: c.Mailbox, ClientID: clientID, AppOnly: true, Scope: f.Get("scope"), Roles: c.Roles}, s.TTL)
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(s.TTL / time.Second)})
	case "refresh_token", "authorization_code", "urn:ietf:params:oauth:grant-type:device_code":
		s.delegatedToken(w, r, false)
	default:
		oauthError(w, 400, "unsupported_grant_type", "Invalid grant_type: "+f.Get("grant_type"))
	}
}

func (s *Server) jwtBearer(w http.ResponseWriter, r *http.Request, assertion string) {
	hd, claims, err := verifyJWT(assertion, nil)
	if err != nil {
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	iss, _ := claims["iss"].(string)
	s.mu.Lock()
	sa, ok := s.sas[iss]
	s.mu.Unlock()
	if !ok {
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	if _, _, err := verifyJWT(assertion, sa.Key); err != nil {
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	s.recordJWT(hd, claims)
	if claims["aud"] != s.URL+"/token" {
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
		return
	}
	if expired(claims) {
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
		return
	}
	sub, _ := claims["sub"].(string)
	scope, _ := claims["scope"].(string)
	if sub == "" || !allowed(scope, sa.Scopes) {
		oauthError(w, 401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.")
		return
	}
	s.mu.Lock()
	tok := s.mint(sub, s.TTL)
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"access_token": tok, "expires_in": int(s.TTL / time.Second), "token_type": "Bearer"})
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	s.introspections.Add(1)
	_ = r.ParseForm()
	tok := r.PostForm.Get("token")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	mailbox, ok := s.Validate(tok)
	if !ok {
		writeJSON(w, 200, map[string]any{"active": false})
		return
	}
	writeJSON(w, 200, map[string]any{"active": true, "username": mailbox, "email": mailbox})
}

func (s *Server) recordJWT(hd, claims map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastJWTHd, s.lastJWT = hd, claims
}

func allowed(scope string, granted []string) bool {
	if scope == "" {
		return false
	}
	for _, sc := range strings.Fields(scope) {
		ok := false
		for _, g := range granted {
			ok = ok || g == sc
		}
		if !ok {
			return false
		}
	}
	return true
}

func expired(claims map[string]any) bool {
	exp, ok := claims["exp"].(float64)
	return !ok || time.Unix(int64(exp), 0).Before(time.Now())
}

// verifyJWT checks an RS256 or PS256 signature (when key is non-nil) and
// returns the decoded header and claims.
func verifyJWT(token string, key *rsa.PublicKey) (map[string]any, map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("not a JWT")
	}
	var hd, claims map[string]any
	for i, dst := range []*map[string]any{&hd, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return nil, nil, err
		}
	}
	if key == nil {
		return hd, claims, nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch hd["alg"] {
	case "RS256":
		err = rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig)
	case "PS256":
		err = rsa.VerifyPSS(key, crypto.SHA256, sum[:], sig, nil)
	default:
		err = fmt.Errorf("unsupported alg %v", hd["alg"])
	}
	return hd, claims, err
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
