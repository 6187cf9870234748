// Package admin is mailproxy's small HTTP server for operators: a page that
// shows each profile's credential and token state, with a Get token button
// (the authorization code flow, coming back to this server) and a Test
// button (mailproxy check); /healthz, /readyz and /metrics for probes and
// Prometheus; and the webhook that says when a person must sign in again.
//
// It never shows or logs a token or secret.
package admin

import (
	"context"
	"crypto/subtle"
	"embed"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"mailproxy/tokens"
)

// Profile is what the page shows and does for one profile.
type Profile struct {
	Name       string
	Credential string // e.g. "microsoft365 (public app)"
	Account    string
	// Tokens is the profile's token cache (nil for basic credentials).
	Tokens interface {
		State() tokens.State
		Renew()
	}
	// Delegated is set when a person signs in to grant the credential.
	Delegated tokens.Delegated
}

// Options configure the server.
type Options struct {
	Profiles []Profile
	// Username and Password protect everything but the probes and the
	// sign-in callback (HTTP basic); Token is a bearer token for the same.
	Username, Password, Token string
	// RedirectURL is the sign-in callback's URL as registered with the
	// provider (default: http://HOST/oauth/callback of the request).
	RedirectURL string
	// Test runs mailproxy check for a profile.
	Test func(ctx context.Context, profile string) (report string, ok bool)
	// Ready lists what keeps the process from serving (listeners not up).
	Ready func() []string
	// Degraded lists what an operator should know while the process still
	// serves (a token store that cannot be reached): /readyz says it and
	// stays 200, so that replicas are not all taken out of service at once.
	Degraded func() []string
	// Reload re-reads the configuration (POST /reload); nil: not offered.
	Reload  func(ctx context.Context) error
	Metrics *Metrics
	Logger  *slog.Logger
}

// Server is the admin HTTP handler. A reload hands it the new profiles
// and credentials (Update); sign-ins under way survive it.
type Server struct {
	mux *http.ServeMux

	mu       sync.Mutex
	o        Options
	profiles map[string]*Profile
	pending  map[string]signIn // by state
}

type signIn struct {
	profile, verifier, redirect string
	expires                     time.Time
}

// pendingLimit bounds sign-ins started and not finished.
const pendingLimit = 64

//go:embed page.html
var pageFS embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Local().Format("2006-01-02 15:04:05 MST")
	},
}).ParseFS(pageFS, "page.html"))

// New builds the server.
func New(o Options) *Server {
	s := &Server{pending: map[string]signIn{}, mux: http.NewServeMux()}
	s.Update(o)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /oauth/callback", s.callback)
	s.mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(o.Metrics.reg, promhttp.HandlerOpts{})))
	s.mux.Handle("GET /{$}", s.auth(http.HandlerFunc(s.index)))
	s.mux.Handle("POST /profiles/{name}/signin", s.auth(s.sameOrigin(s.startSignIn)))
	s.mux.Handle("POST /profiles/{name}/test", s.auth(s.sameOrigin(s.test)))
	s.mux.Handle("POST /reload", s.auth(s.sameOrigin(s.reload)))
	return s
}

// Update takes the options of a new configuration (Metrics stay the
// server's first).
func (s *Server) Update(o Options) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	profiles := map[string]*Profile{}
	for i := range o.Profiles {
		profiles[o.Profiles[i].Name] = &o.Profiles[i]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.o.Metrics != nil {
		o.Metrics = s.o.Metrics
	}
	s.o, s.profiles = o, profiles
}

// now is the options and profiles in force.
func (s *Server) now() (Options, map[string]*Profile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.o, s.profiles
}

// reload re-reads the configuration: 200, or 422 with every reason.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	o, _ := s.now()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if o.Reload == nil {
		http.Error(w, "this process has no configuration file to reload", http.StatusNotFound)
		return
	}
	if err := o.Reload(r.Context()); err != nil {
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, "reload refused; the configuration in force stays:\n%v\n", err)
		return
	}
	fmt.Fprintln(w, "reloaded")
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// auth lets a request through with the basic credentials or the bearer token.
func (s *Server) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		eq := func(a, b string) bool { return b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
		o, _ := s.now()
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && eq(bearer, o.Token) {
			h.ServeHTTP(w, r)
			return
		}
		if u, p, ok := r.BasicAuth(); ok && eq(u, o.Username) && eq(p, o.Password) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="mailproxy admin", charset="UTF-8"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
	})
}

// sameOrigin refuses cross-site form posts (the browser sends basic
// credentials with them on its own).
func (s *Server) sameOrigin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site := r.Header.Get("Sec-Fetch-Site")
		origin := r.Header.Get("Origin")
		if (site != "" && site != "same-origin" && site != "none") ||
			(origin != "" && origin != "http://"+r.Host && origin != "https://"+r.Host) {
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		h(w, r)
	})
}

type row struct {
	Profile
	State     tokens.State
	HasTokens bool
	Usable    bool
}

type view struct {
	Rows     []row
	Notice   string
	Problem  string
	TestName string
	TestOK   bool
	Report   string
}

func (s *Server) rows() []row {
	o, _ := s.now()
	var out []row
	for _, p := range o.Profiles {
		r := row{Profile: p, Usable: true}
		if p.Tokens != nil {
			r.HasTokens = true
			r.State = p.Tokens.State()
			r.Usable = r.State.Usable
		}
		out = append(out, r)
	}
	return out
}

func (s *Server) render(w http.ResponseWriter, status int, v view) {
	v.Rows = s.rows()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := page.Execute(w, v); err != nil {
		o, _ := s.now()
		o.Logger.Warn("admin page", "err", err)
	}
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	v := view{}
	_, profiles := s.now()
	if name := r.URL.Query().Get("signed_in"); profiles[name] != nil {
		v.Notice = "Signed in: profile " + name + " has a new grant."
	}
	s.render(w, http.StatusOK, v)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	if o, _ := s.now(); o.Ready != nil {
		problems = o.Ready()
	}
	for _, r := range s.rows() {
		switch {
		case r.Usable:
		case r.State.NeedsSignIn:
			problems = append(problems, fmt.Sprintf("profile %s: a person must sign in (%s)", r.Name, r.State.LastError))
		case r.State.LastError != "":
			problems = append(problems, fmt.Sprintf("profile %s: no usable token: %s", r.Name, r.State.LastError))
		default:
			problems = append(problems, fmt.Sprintf("profile %s: no token yet", r.Name))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:")
		for _, p := range problems {
			fmt.Fprintln(w, "  "+p)
		}
		return
	}
	fmt.Fprintln(w, "ready")
	if o, _ := s.now(); o.Degraded != nil {
		for _, d := range o.Degraded() {
			fmt.Fprintln(w, "  but: "+d)
		}
	}
}

func (s *Server) redirectURL(r *http.Request) string {
	if o, _ := s.now(); o.RedirectURL != "" {
		return o.RedirectURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/oauth/callback"
}

func (s *Server) startSignIn(w http.ResponseWriter, r *http.Request) {
	o, profiles := s.now()
	p := profiles[r.PathValue("name")]
	if p == nil || p.Delegated == nil {
		s.render(w, http.StatusNotFound, view{Problem: "That profile has no credential a person signs in to."})
		return
	}
	state, verifier, redirect := tokens.NewState(), tokens.NewVerifier(), s.redirectURL(r)
	authURL, err := p.Delegated.AuthCodeURL(r.Context(), p.Account, redirect, state, verifier)
	if err != nil {
		s.render(w, http.StatusBadGateway, view{Problem: fmt.Sprintf("profile %s: cannot start the sign-in: %v", p.Name, err)})
		return
	}
	s.mu.Lock()
	now := time.Now()
	for k, v := range s.pending {
		if now.After(v.expires) {
			delete(s.pending, k)
		}
	}
	full := len(s.pending) >= pendingLimit
	if !full {
		s.pending[state] = signIn{profile: p.Name, verifier: verifier, redirect: redirect, expires: now.Add(10 * time.Minute)}
	}
	s.mu.Unlock()
	if full {
		s.render(w, http.StatusTooManyRequests, view{Problem: "Too many sign-ins under way: finish one or wait 10 minutes."})
		return
	}
	o.Logger.Info("sign-in started from the admin page", "profile", p.Name)
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

// callback is where the provider sends the browser back. The state, known
// only to the browser that started the sign-in, is what authorises it.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	s.mu.Lock()
	si, ok := s.pending[state]
	delete(s.pending, state)
	s.mu.Unlock()
	if !ok || time.Now().After(si.expires) {
		s.render(w, http.StatusBadRequest, view{Problem: "This sign-in is unknown or expired: press Get token again."})
		return
	}
	o, profiles := s.now()
	p := profiles[si.profile]
	if p == nil || p.Delegated == nil {
		s.render(w, http.StatusBadRequest, view{Problem: "profile " + si.profile + " is no longer in the configuration."})
		return
	}
	code, err := tokens.CodeFromRedirect(r.URL, state)
	who := ""
	if err == nil {
		who, err = p.Delegated.Redeem(r.Context(), p.Account, code, si.redirect, si.verifier)
	}
	if err != nil {
		o.Logger.Warn("sign-in failed", "profile", p.Name, "err", err)
		s.render(w, http.StatusBadRequest, view{Problem: fmt.Sprintf("profile %s: sign-in failed: %v", p.Name, err)})
		return
	}
	o.Logger.Info("signed in from the admin page", "profile", p.Name, "account", who)
	if !strings.EqualFold(who, p.Account) {
		s.render(w, http.StatusOK, view{Problem: fmt.Sprintf("profile %s uses %s, but %s signed in; that grant is saved, but this profile still needs %s.", p.Name, p.Account, who, p.Account)})
		return
	}
	if p.Tokens != nil {
		p.Tokens.Renew()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		waitUsable(ctx, p)
	}
	http.Redirect(w, r, "/?signed_in="+url.QueryEscape(p.Name), http.StatusSeeOther)
}

// waitUsable gives the background refresh a moment, so the page the
// browser lands on shows the new token.
func waitUsable(ctx context.Context, p *Profile) {
	for ctx.Err() == nil && !p.Tokens.State().Usable {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) test(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	o, profiles := s.now()
	if profiles[name] == nil || o.Test == nil {
		s.render(w, http.StatusNotFound, view{Problem: "No such profile."})
		return
	}
	report, ok := o.Test(r.Context(), name)
	s.render(w, http.StatusOK, view{TestName: name, TestOK: ok, Report: report})
}
