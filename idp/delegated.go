package idp

// Delegated grants: a person signs in (authorization code with PKCE, or
// device code) and the app redeems refresh tokens from then on.
//
// Microsoft (learn.microsoft.com/entra/identity-platform/):
//   - v2-oauth2-auth-code-flow: GET /{tenant}/oauth2/v2.0/authorize with
//     client_id, response_type=code, redirect_uri, scope, state,
//     code_challenge(_method); the browser comes back to redirect_uri with
//     code and state, or error and error_description. The code is redeemed
//     once (AADSTS54005 when reused), with the code_verifier (AADSTS501481
//     when it does not match).
//   - v2-oauth2-device-code: POST /{tenant}/oauth2/v2.0/devicecode answers
//     device_code, user_code, verification_uri, expires_in (900), interval,
//     message; polling the token endpoint with grant_type
//     urn:ietf:params:oauth:grant-type:device_code answers 400
//     authorization_pending, authorization_declined, expired_token.
//   - reply-url: the port of a loopback (localhost, 127.0.0.1) redirect URI
//     is ignored when matching; otherwise AADSTS50011.
//   - refresh-tokens: every redemption returns a new refresh token; a
//     revoked or expired one is invalid_grant (AADSTS700082).
//   - Token responses for public clients carry id_token and client_info
//     (base64url {"uid","utid"}), which MSAL needs to cache the account.
// RFC 6749 §4.1 and RFC 8628 (slow_down when polled faster than interval)
// for the generic provider at /authorize, /device and /token.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// PublicApp is an app people sign in to: a Microsoft public client (Tenant
// set) or a generic provider's client (Secret optional).
type PublicApp struct {
	Tenant   string
	ClientID string
	Secret   string
	// RedirectURIs are the registered redirect URIs.
	RedirectURIs []string
	// TTL of its access tokens (default: the server's).
	TTL time.Duration
	// ReuseDetection revokes the whole grant when a refresh token that
	// rotation replaced is presented again (RFC 9700 §4.14.2: "the
	// authorization server cannot determine which party submitted the
	// invalid refresh token, but it will revoke the active refresh
	// token"), as many providers do. The grant is lost: a person must sign
	// in again.
	ReuseDetection bool
}

type authCode struct {
	clientID, redirectURI, challenge, mailbox, scope string
	expiry                                           time.Time
	used                                             bool
}

type deviceGrant struct {
	clientID, userCode, scope, mailbox string
	declined                           bool
	expiry, lastPoll                   time.Time
	interval                           time.Duration
}

type refreshGrant struct {
	mailbox, clientID, scope string
	// family names the sign-in the token descends from by rotation.
	family string
}

// AddPublicApp registers an app people sign in to.
func (s *Server) AddPublicApp(a PublicApp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.public[a.ClientID] = a
}

// AddUser lets a person sign in as mailbox with password.
func (s *Server) AddUser(mailbox, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[strings.ToLower(mailbox)] = password
}

// ApproveDevice signs mailbox in for the device code whose user code is
// given, as the person would on the verification page.
func (s *Server) ApproveDevice(userCode, mailbox, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pw, ok := s.users[strings.ToLower(mailbox)]; !ok || pw != password {
		return fmt.Errorf("AADSTS50126: Error validating credentials due to invalid username or password")
	}
	for _, d := range s.devices {
		if d.userCode == strings.ToUpper(strings.TrimSpace(userCode)) && time.Now().Before(d.expiry) {
			d.mailbox = strings.ToLower(mailbox)
			return nil
		}
	}
	return fmt.Errorf("AADSTS70000: the code you entered is not valid or has expired")
}

// RevokeUser makes every refresh and access token of mailbox invalid, as
// an admin's "revoke sessions" does (with continuous access evaluation for
// the access tokens).
func (s *Server) RevokeUser(mailbox string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for rt, g := range s.refresh {
		if strings.EqualFold(g.mailbox, mailbox) {
			delete(s.refresh, rt)
		}
	}
	for at, i := range s.access {
		if strings.EqualFold(i.mailbox, mailbox) {
			delete(s.access, at)
		}
	}
}

// revokeFamily ends every refresh token of the sign-in family. The caller
// holds s.mu.
func (s *Server) revokeFamily(family string) {
	for rt, g := range s.refresh {
		if g.family == family {
			delete(s.refresh, rt)
		}
	}
	s.revoked[family] = true
}

// RevokedGrants counts the grants revoked because a spent refresh token
// was presented again (ReuseDetection).
func (s *Server) RevokedGrants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.revoked)
}

// Redemptions counts clientID's refresh tokens redeemed (each one rotated
// when RotateRefresh is set); a spent one presented again is not counted.
func (s *Server) Redemptions(clientID string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redemptions[clientID]
}

// DevicePolls counts device code token polls (slow_down included).
func (s *Server) DevicePolls() int64 { return s.devicePolls.Load() }

// DevicePollTimes returns when each device code poll came.
func (s *Server) DevicePollTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.polls...)
}

func redirectAllowed(registered []string, got string) bool {
	gu, err := url.Parse(got)
	if err != nil {
		return false
	}
	for _, r := range registered {
		ru, err := url.Parse(r)
		if err != nil {
			continue
		}
		if loopback(ru.Hostname()) && ru.Scheme == "http" && gu.Scheme == "http" && ru.Hostname() == gu.Hostname() &&
			strings.TrimSuffix(ru.Path, "/") == strings.TrimSuffix(gu.Path, "/") {
			return true // the port of a loopback redirect is ignored
		}
		if r == got {
			return true
		}
	}
	return false
}

func loopback(h string) bool { return h == "localhost" || h == "127.0.0.1" }

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html><head><title>Sign in to your account</title></head><body>
<h1>Sign in</h1>
<p>{{.App}} wants to read and send your mail.</p>
{{if .Error}}<p id="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<label>Email <input id="username" name="username" type="email" value="{{.Username}}"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="signin" type="submit">Sign in</button>
</form></body></html>`))

// authorize serves the sign-in page (GET) and answers it (POST), for
// Microsoft (tenant set) and the generic provider.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f := r.Form
	clientID, redirectURI := f.Get("client_id"), f.Get("redirect_uri")
	s.mu.Lock()
	app, ok := s.public[clientID]
	s.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'.", clientID, tenant), http.StatusBadRequest)
		return
	}
	if !redirectAllowed(app.RedirectURIs, redirectURI) {
		// Microsoft shows this on its own page: it never redirects to an unregistered URI.
		http.Error(w, fmt.Sprintf("AADSTS50011: The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirectURI, clientID), http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(redirectURI)
	q := back.Query()
	q.Set("state", f.Get("state"))
	if f.Get("response_type") != "code" {
		q.Set("error", "unsupported_response_type")
		q.Set("error_description", "AADSTS900144: The request body must contain the following parameter: 'response_type'.")
		back.RawQuery = q.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
		return
	}
	if m := f.Get("code_challenge_method"); f.Get("code_challenge") != "" && m != "S256" {
		q.Set("error", "invalid_request")
		q.Set("error_description", "AADSTS501491: Invalid size of Code_Challenge parameter (only S256 is accepted here).")
		back.RawQuery = q.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
		return
	}
	hidden := map[string]string{}
	for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method", "login_hint", "prompt"} {
		if v := f.Get(k); v != "" {
			hidden[k] = v
		}
	}
	user := strings.ToLower(f.Get("username"))
	if r.Method == http.MethodPost {
		s.mu.Lock()
		pw, known := s.users[user]
		s.mu.Unlock()
		if known && pw == f.Get("password") {
			code := "code-" + randomString(24)
			s.mu.Lock()
			s.codes[code] = &authCode{clientID: clientID, redirectURI: redirectURI, challenge: f.Get("code_challenge"),
				mailbox: user, scope: f.Get("scope"), expiry: time.Now().Add(10 * time.Minute)}
			s.mu.Unlock()
			q.Set("code", code)
			back.RawQuery = q.Encode()
			http.Redirect(w, r, back.String(), http.StatusFound)
			return
		}
	}
	data := map[string]any{"App": clientID, "Action": r.URL.Path, "Hidden": hidden, "Username": f.Get("login_hint")}
	if r.Method == http.MethodPost {
		data["Error"] = "Your account or password is incorrect."
		data["Username"] = user
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	signInPage.Execute(w, data)
}

var devicePage = template.Must(template.New("device").Parse(`<!doctype html>
<html><head><title>Enter code</title></head><body>
{{if .Done}}<p id="done">You have signed in. You may close this window.</p>{{else}}
{{if .Error}}<p id="error" role="alert">{{.Error}}</p>{{end}}
<form method="post"><label>Code <input name="user_code"></label>
<label>Email <input name="username" type="email"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Next</button></form>{{end}}</body></html>`))

// deviceLogin is the verification page a person opens for a device code.
func (s *Server) deviceLogin(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{}
	if r.Method == http.MethodPost {
		if err := s.ApproveDevice(r.PostFormValue("user_code"), r.PostFormValue("username"), r.PostFormValue("password")); err != nil {
			data["Error"] = err.Error()
		} else {
			data["Done"] = true
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	devicePage.Execute(w, data)
}

// deviceCode starts a device code grant.
func (s *Server) deviceCode(w http.ResponseWriter, r *http.Request, ms bool) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "malformed form body")
		return
	}
	clientID := r.PostForm.Get("client_id")
	s.mu.Lock()
	_, ok := s.public[clientID]
	s.mu.Unlock()
	if !ok {
		if ms {
			aadError(w, 400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory.", clientID))
		} else {
			oauthError(w, 401, "invalid_client", "Unknown client.")
		}
		return
	}
	interval := s.DeviceInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	dc := "dc-" + randomString(24)
	uc := strings.ToUpper(randomString(6))
	uc = strings.NewReplacer("-", "X", "_", "Y").Replace(uc)
	s.mu.Lock()
	s.devices[dc] = &deviceGrant{clientID: clientID, userCode: uc, scope: r.PostForm.Get("scope"),
		expiry: time.Now().Add(s.deviceTTL()), interval: interval}
	s.mu.Unlock()
	verify := "https://" + r.Host + "/devicelogin"
	writeJSON(w, 200, map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": verify,
		"expires_in": int(s.deviceTTL() / time.Second), "interval": int(interval / time.Second),
		"message": fmt.Sprintf("To sign in, use a web browser to open the page %s and enter the code %s to authenticate.", verify, uc),
	})
}

func (s *Server) deviceTTL() time.Duration {
	if s.DeviceTTL > 0 {
		return s.DeviceTTL
	}
	return 15 * time.Minute
}

// delegatedToken answers the authorization_code, device_code and
// refresh_token grants; ms selects Microsoft's error bodies and response.
func (s *Server) delegatedToken(w http.ResponseWriter, r *http.Request, ms bool) {
	f := r.PostForm
	fail := func(status int, code string, aadsts int, msg string) {
		if ms {
			aadError(w, status, code, aadsts, msg)
		} else {
			oauthError(w, status, code, msg)
		}
	}
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	app, known := s.public[clientID]
	generic, knownGeneric := s.clients[clientID]
	switch {
	case known && app.Secret != "" && app.Secret != secret:
		fail(401, "invalid_client", 7000215, "Invalid client secret provided.")
		return
	case !known && knownGeneric && generic.Secret != "" && generic.Secret != secret:
		fail(401, "invalid_client", 7000215, "Invalid client secret provided.")
		return
	case !known && !knownGeneric:
		fail(400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory.", clientID))
		return
	}
	var mailbox, scope string
	family := "grant-" + randomString(12) // a new sign-in starts a family
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := s.codes[f.Get("code")]
		switch {
		case !ok || c.clientID != clientID:
			fail(400, "invalid_grant", 70000, "The provided authorization code is invalid.")
			return
		case c.used:
			fail(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.")
			return
		case time.Now().After(c.expiry):
			fail(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.")
			return
		case c.redirectURI != f.Get("redirect_uri"):
			fail(400, "invalid_grant", 50011, "The redirect URI specified in the request does not match the one the authorization code was issued for.")
			return
		}
		if c.challenge != "" {
			sum := sha256.Sum256([]byte(f.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
				fail(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
				return
			}
		}
		c.used = true
		mailbox, scope = c.mailbox, c.scope
	case "urn:ietf:params:oauth:grant-type:device_code", "device_code":
		s.devicePolls.Add(1)
		s.polls = append(s.polls, time.Now())
		if s.DeviceSlowDown > 0 {
			s.DeviceSlowDown--
			fail(400, "slow_down", 70016, "OAuth 2.0 device flow error. Polling too fast: slow down.")
			return
		}
		d, ok := s.devices[f.Get("device_code")]
		switch {
		case !ok || d.clientID != clientID:
			fail(400, "invalid_grant", 70000, "The provided device code is invalid.")
			return
		case time.Now().After(d.expiry):
			fail(400, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
			return
		case d.declined:
			fail(400, "authorization_declined", 70000, "The user declined the sign-in.")
			return
		case d.mailbox == "":
			now := time.Now()
			tooSoon := !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval-200*time.Millisecond
			d.lastPoll = now
			if tooSoon {
				fail(400, "slow_down", 70016, "OAuth 2.0 device flow error. Polling too fast: slow down.")
				return
			}
			fail(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
			return
		}
		delete(s.devices, f.Get("device_code"))
		mailbox, scope = d.mailbox, d.scope
	case "refresh_token":
		rt := f.Get("refresh_token")
		g, ok := s.refresh[rt]
		if family, spent := s.spent[rt]; spent {
			s.reuses++
			if app.ReuseDetection {
				s.revokeFamily(family)
			}
		}
		if !ok || (g.clientID != "" && g.clientID != clientID) {
			fail(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00.")
			return
		}
		if s.RotateRefresh {
			delete(s.refresh, rt)
			s.spent[rt] = g.family
		}
		s.redemptions[clientID]++
		mailbox, scope, family = g.mailbox, g.scope, g.family
		if f.Get("scope") != "" {
			scope = f.Get("scope")
		}
	default:
		fail(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
		return
	}
	ttl := s.TTL
	if app.TTL > 0 {
		ttl = app.TTL
	}
	secs := int(ttl / time.Second)
	resp := map[string]any{"token_type": "Bearer", "expires_in": secs, "scope": scope,
		"access_token": s.mintGrant(Grant{Mailbox: mailbox, ClientID: clientID, Scope: scope}, ttl)}
	if strings.Contains(scope, "offline_access") || !ms || f.Get("grant_type") == "refresh_token" {
		next := "rt-" + randomString(24)
		s.refresh[next] = refreshGrant{mailbox: mailbox, clientID: clientID, scope: scope, family: family}
		resp["refresh_token"] = next
	}
	if ms || strings.Contains(scope, "openid") {
		resp["id_token"] = s.idToken(r, clientID, mailbox)
	}
	if ms {
		resp["ext_expires_in"] = secs
		ci, _ := json.Marshal(map[string]string{"uid": uid(mailbox), "utid": testTenantID})
		resp["client_info"] = base64.RawURLEncoding.EncodeToString(ci)
	}
	writeJSON(w, 200, resp)
}

// testTenantID is the directory ID the fake answers with.
const testTenantID = "9188040d-6c67-4c5b-b112-36a304b66dad"

func uid(mailbox string) string {
	sum := sha256.Sum256([]byte(mailbox))
	b := sum[:16]
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// idToken is an OpenID Connect ID token. Its signature is not verifiable:
// clients that receive it straight from the token endpoint only read it.
func (s *Server) idToken(r *http.Request, clientID, mailbox string) string {
	now := time.Now().Unix()
	hd, _ := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "fake"})
	claims, _ := json.Marshal(map[string]any{
		"aud": clientID, "iss": "https://" + r.Host + "/" + testTenantID + "/v2.0", "iat": now, "nbf": now, "exp": now + 3600,
		"name": mailbox, "oid": uid(mailbox), "preferred_username": mailbox, "email": mailbox,
		"sub": uid(mailbox), "tid": testTenantID, "ver": "2.0",
	})
	enc := base64.RawURLEncoding.EncodeToString
	return enc(hd) + "." + enc(claims) + "." + enc([]byte("not-signed"))
}
