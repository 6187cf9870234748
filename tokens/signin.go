package tokens

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// NewState returns a random OAuth state value.
func NewState() string { return oauth2.GenerateVerifier()[:32] }

// NewVerifier returns a random PKCE code verifier.
func NewVerifier() string { return oauth2.GenerateVerifier() }

// CodeFromRedirect takes the code from the URL the provider redirected the
// browser to, after checking state. A provider's error is returned as such.
func CodeFromRedirect(u *url.URL, state string) (string, error) {
	q := u.Query()
	if e := q.Get("error"); e != "" {
		return "", &OAuthError{Code: e, Description: q.Get("error_description")}
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return "", errors.New("the redirect's state does not match this sign-in (an old or forged link): start again")
	}
	code := q.Get("code")
	if code == "" {
		return "", errors.New("the redirect carries no code")
	}
	return code, nil
}

// BrowserSignIn runs the authorization code flow with PKCE and a loopback
// redirect: it listens on the redirect URL's port on 127.0.0.1 (any free
// port if it names none; Microsoft ignores the port of loopback redirects),
// calls show with the URL for the person's browser, and waits for the
// browser to come back. redirect is like http://localhost or
// http://127.0.0.1:8400/callback.
func BrowserSignIn(ctx context.Context, d Delegated, account, redirect string, show func(authURL string)) (string, error) {
	ru, err := url.Parse(redirect)
	if err != nil || ru.Scheme != "http" || !isLoopbackHost(ru.Hostname()) {
		return "", fmt.Errorf("redirect URL %q is not http://localhost or http://127.0.0.1: use the paste sign-in for it", redirect)
	}
	port := ru.Port()
	if port == "" {
		port = "0"
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return "", fmt.Errorf("listening for the redirect: %w", err)
	}
	defer l.Close()
	ru.Host = net.JoinHostPort(ru.Hostname(), fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	if ru.Path == "" {
		ru.Path = "/"
	}
	redirectURI := ru.String()
	state, verifier := NewState(), NewVerifier()
	authURL, err := d.AuthCodeURL(ctx, account, redirectURI, state, verifier)
	if err != nil {
		return "", err
	}
	type result struct {
		account string
		err     error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != ru.Path {
			http.NotFound(w, r)
			return
		}
		code, err := CodeFromRedirect(r.URL, state)
		who := ""
		if err == nil {
			who, err = d.Redeem(r.Context(), account, code, redirectURI, verifier)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<!doctype html><title>mailproxy</title><p>Sign-in failed: %s</p>", html.EscapeString(err.Error()))
		} else {
			fmt.Fprintf(w, "<!doctype html><title>mailproxy</title><p>Signed in as %s. You may close this window.</p>", html.EscapeString(who))
		}
		select {
		case done <- result{who, err}:
		default:
		}
	})}
	go srv.Serve(l)
	defer func() {
		// Let the browser get its "signed in" page before the server goes.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	show(authURL)
	select {
	case r := <-done:
		return r.account, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// PasteSignIn is the authorization code flow for redirect URLs mailproxy
// cannot listen on: show gives the URL to open, paste returns the URL the
// browser ended on (its address bar), which holds the code.
func PasteSignIn(ctx context.Context, d Delegated, account, redirectURI string, show func(authURL string), paste func() (string, error)) (string, error) {
	state, verifier := NewState(), NewVerifier()
	authURL, err := d.AuthCodeURL(ctx, account, redirectURI, state, verifier)
	if err != nil {
		return "", err
	}
	show(authURL)
	line, err := paste()
	if err != nil {
		return "", err
	}
	u, err := url.Parse(strings.TrimSpace(line))
	if err != nil {
		return "", fmt.Errorf("not a URL: %w", err)
	}
	code, err := CodeFromRedirect(u, state)
	if err != nil {
		return "", err
	}
	return d.Redeem(ctx, account, code, redirectURI, verifier)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
