// Package fakegraph is a Microsoft Graph (v1.0) mail double: mailboxes with
// their well-known and user folders (create, rename, move, delete),
// sendMail (MIME and JSON), drafts, attachments and upload sessions,
// listings with paging and $search, message delta per folder, $value,
// PATCH (extended properties too), move, copy and delete, immutable ids,
// and Outlook's throttling (per app and mailbox). Test hooks change a
// mailbox "from Outlook's side" while it is being served.
//
// It is what mailproxy's e2e tests and its in-process demo talk to, since
// the real Graph cannot be reached from here. Status codes and error bodies
// ({"error":{"code","message","innerError":{"date","request-id",…}}}) follow
// Graph's documentation and observed behaviour as recorded, with their
// sources, in /work/shared/GRAPH.md and PROTOCOLS.md §3; each behaviour
// names its source in a comment ([Rec] marks our own choice where the
// sources are silent). Where the real service loses mail on a client's
// mistake, so does the double: MIME is delivered only to the addresses in
// its To/Cc/Bcc headers, as there is no envelope (GRAPH.md 1.3).
//
// Bearer tokens are read through a TokenLookup (the fake issuer in package
// idp implements it).
//
// It must never be used to hold or send anything real.
package fakegraph

import (
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailproxy/idp"
)

// TokenLookup reads an access token (idp.Server implements it).
type TokenLookup interface {
	Lookup(token string) (idp.Grant, bool)
}

// Server is the Graph double. Add mailboxes, set URL, then serve it over
// HTTPS.
type Server struct {
	// ConcurrencyLimit is the number of requests in flight per (app,
	// mailbox) (default 4); one more gets 429 ApplicationThrottled.
	ConcurrencyLimit int
	// Latency is added to every request (so concurrency is observable in
	// tests); default 0.
	Latency time.Duration
	// URL is the base URL the server is reached at (e.g.
	// https://127.0.0.1:PORT), used to build @odata.nextLink and upload
	// URLs; set by the caller before serving.
	URL string

	tokens TokenLookup

	mu        sync.Mutex
	boxes     map[string]*mailbox // by address and by object id, lower case
	byImm     map[string]*message
	byREST    map[string]*message
	delivered map[string][]Message
	sessions  map[string]*uploadSession
	seq       int64
	last      time.Time
	inflight  map[flightKey]int
	maxFlight int
	frac, acc float64
	retry     string
	down      bool
	// BreakValue: $value answers are cut after breakAfter bytes.
	breakValue bool
	breakAfter int
	// Delta rounds in progress, by id, oldest first in roundOrder; a
	// generation that ExpireDeltaTokens bumps (delta.go).
	rounds     map[string]*deltaRound
	roundOrder []string
	deltaGen   int64

	requests, throttled, values atomic.Int64
}

type flightKey struct{ app, mailbox string }

// New returns a Server with no mailboxes that checks bearer tokens with
// tokens.
func New(tokens TokenLookup) *Server {
	return &Server{
		tokens:    tokens,
		boxes:     map[string]*mailbox{},
		byImm:     map[string]*message{},
		byREST:    map[string]*message{},
		delivered: map[string][]Message{},
		sessions:  map[string]*uploadSession{},
		inflight:  map[flightKey]int{},
		rounds:    map[string]*deltaRound{},
	}
}

// Throttle answers that fraction (0..1) of requests 429 TooManyRequests
// with Retry-After: retryAfter (e.g. "0.5"; Graph's own sample is "2.128");
// 0 turns it off. It is deterministic: every 1/fraction-th request that
// reaches the throttling check (authenticated, mailbox found, permitted) is
// refused.
func (s *Server) Throttle(fraction float64, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frac, s.acc, s.retry = min(max(fraction, 0), 1), 0, retryAfter
}

// SetDown answers every request 503 ServiceUnavailable (with Retry-After:
// 1) while down.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Requests counts requests (all, throttled ones and upload PUTs included).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Values counts the MIME downloads answered (GET …/$value, 200).
func (s *Server) Values() int64 { return s.values.Load() }

// Throttled counts 429 answers (503s are not counted).
func (s *Server) Throttled() int64 { return s.throttled.Load() }

// MaxInFlight is the most requests seen at once for one (app, mailbox).
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxFlight
}

// call is one request to a mailbox.
type call struct {
	s         *Server
	r         *http.Request
	g         idp.Grant
	box       *mailbox
	body      []byte
	immutable bool
	folderRef string // mailFolders/{f}/… ("" for /messages)
	msgRef    string
}

type perm int

const (
	permRead perm = iota
	permWrite
	permSend
	permUser
)

type route struct {
	perm perm
	fn   func(*call) reply
}

// ServeHTTP serves /v1.0/… and the upload URLs under /upload/….
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	sw := &slowWriter{ResponseWriter: w, delay: s.Latency, ctx: r.Context()}
	reqID := newUUID()
	crid := r.Header.Get("client-request-id")
	if crid == "" {
		crid = reqID
	}
	w.Header().Set("request-id", reqID)
	w.Header().Set("client-request-id", crid)
	rp, release := s.serve(r)
	if release != nil {
		defer release() // s.write may abort the handler (BreakValue)
	}
	s.write(sw, rp, reqID, crid)
}

func (s *Server) serve(r *http.Request) (reply, func()) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		// errors.md: 503 "may specify Retry-After" (GRAPH.md 7.3).
		e := newError(503, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.")
		e.retryAfter = "1"
		return fail(e), nil
	}
	if strings.HasPrefix(r.URL.Path, "/upload/") {
		return s.upload(r)
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1.0/")
	if !ok {
		// [Rec] the double serves v1.0 only.
		return fail(newError(400, "BadRequest", "Invalid version: the double serves /v1.0 only.")), nil
	}
	g, e := s.authenticate(r)
	if e != nil {
		return fail(e), nil
	}
	c := &call{s: s, r: r, g: g, immutable: immutableIDs(r)}
	segs := keySegments(strings.Split(strings.Trim(rest, "/"), "/"))
	if e := s.resolveUser(c, &segs); e != nil {
		return fail(e), nil
	}
	rt, e := match(r.Method, segs, c)
	if e != nil {
		return fail(e), nil
	}
	if !permitted(g, rt.perm) {
		return fail(accessDenied(rt.perm)), nil
	}
	if e := s.checkThrottle(); e != nil {
		return fail(e), nil
	}
	release, e := s.acquire(g.ClientID, c.box.address)
	if e != nil {
		return fail(e), nil
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPatch || r.Method == http.MethodPut {
		if c.body, e = readBody(r); e != nil {
			return fail(e), release
		}
	}
	s.mu.Lock()
	rp := rt.fn(c)
	s.mu.Unlock()
	if c.immutable && rp.err == nil {
		if rp.header == nil {
			rp.header = http.Header{}
		}
		// outlook-immutable-id.md: the preference applies to this request.
		rp.header.Add("Preference-Applied", `IdType="ImmutableId"`)
	}
	return rp, release
}

// authenticate reads the bearer token (GRAPH.md 8.2).
func (s *Server) authenticate(r *http.Request) (idp.Grant, *apiError) {
	h := r.Header.Get("Authorization")
	tok := ""
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		tok = strings.TrimSpace(h[7:])
	}
	if tok == "" {
		// GRAPH.md 8.2 ([Rec] empty-token text).
		return idp.Grant{}, unauthorized("Access token is empty.")
	}
	g, ok := s.tokens.Lookup(tok)
	if !ok {
		// TokenLookup does not tell an expired token from one never
		// issued; [Rec] both get the expiry text (GRAPH.md 8.2), which is
		// what a client meets in practice and answers by refreshing.
		return idp.Grant{}, unauthorized("Access token has expired or is not yet valid.")
	}
	if !graphAudience(g.Scope) {
		// An Outlook (IMAP/SMTP) token at Graph: GRAPH.md 8.2 "Access
		// token validation failure."; the audience is the reason.
		return idp.Grant{}, unauthorized("Access token validation failure. Invalid audience.")
	}
	return g, nil
}

func unauthorized(msg string) *apiError {
	e := newError(401, "InvalidAuthenticationToken", msg)
	// GRAPH.md 8.2: 401 with WWW-Authenticate: Bearer ….
	e.header = http.Header{"Www-Authenticate": {`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`}}
	return e
}

// graphAudience: the token must be for Graph: a scope naming
// graph.microsoft.com (or Graph's app id), or a bare permission such as
// Mail.Send, which the identity platform reads as Graph's. An Outlook
// scope (https://outlook.office365.com/…, PROTOCOLS.md §2.2) is not.
func graphAudience(scope string) bool {
	for _, f := range strings.Fields(strings.ToLower(scope)) {
		switch {
		case strings.Contains(f, "graph.microsoft.com"), strings.HasPrefix(f, "00000003-0000-0000-c000-000000000000"):
			return true
		case f == "openid", f == "profile", f == "offline_access", f == "email":
		case !strings.Contains(f, "/"):
			return true
		}
	}
	return false
}

// granted is what the token may do: an app-only token's roles, a
// delegated token's scopes without the resource prefix (PROTOCOLS.md
// §3.1). [Rec] A delegated ".default" stands for what was consented, which
// the double takes to be every mail permission.
func granted(g idp.Grant) map[string]bool {
	out := map[string]bool{}
	if g.AppOnly {
		for _, r := range g.Roles {
			out[strings.ToLower(r)] = true
		}
		return out
	}
	for _, f := range strings.Fields(strings.ToLower(g.Scope)) {
		f = strings.TrimPrefix(strings.TrimPrefix(f, "https://graph.microsoft.com/"), "00000003-0000-0000-c000-000000000000/")
		if f == ".default" {
			for _, p := range []string{"mail.read", "mail.readwrite", "mail.send", "user.read"} {
				out[p] = true
			}
		}
		out[f] = true
	}
	return out
}

// permitted follows PROTOCOLS.md §3.1: reads need Mail.Read or
// Mail.ReadWrite, changes Mail.ReadWrite, sendMail and send Mail.Send
// (message-send.md); GET {u} needs User.Read* (GRAPH.md 8.5).
func permitted(g idp.Grant, p perm) bool {
	have := granted(g)
	switch p {
	case permRead:
		return have["mail.read"] || have["mail.readwrite"]
	case permWrite:
		return have["mail.readwrite"]
	case permSend:
		return have["mail.send"]
	default:
		return have["user.read"] || have["user.read.all"] || have["user.readbasic.all"] || have["directory.read.all"]
	}
}

func accessDenied(p perm) *apiError {
	if p == permUser {
		// GRAPH.md 8.5.
		return newError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
	}
	// GRAPH.md 8.3.
	return newError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
}

// resolveUser takes /me or /users/{id or address} off segs.
func (s *Server) resolveUser(c *call, segs *[]string) *apiError {
	ss := *segs
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.EqualFold(ss[0], "me"):
		if c.g.AppOnly {
			// GRAPH.md 8.4: 400, not 401/403.
			return newError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
		}
		c.box = s.boxes[strings.ToLower(c.g.Mailbox)]
		if c.box == nil {
			return invalidUser(c.g.Mailbox)
		}
		*segs = ss[1:]
	case strings.EqualFold(ss[0], "users") && len(ss) > 1 && ss[1] != "":
		c.box = s.boxes[strings.ToLower(ss[1])]
		if c.box == nil {
			return invalidUser(ss[1])
		}
		if !c.g.AppOnly && c.box.address != strings.ToLower(c.g.Mailbox) {
			// A delegated token reaches its own mailbox only (no
			// shared-mailbox permissions in the double).
			return accessDenied(permRead)
		}
		*segs = ss[2:]
	default:
		return segmentNotFound(ss[0])
	}
	return nil
}

func invalidUser(id string) *apiError {
	// GRAPH.md 8.5.
	return newError(404, "ErrorInvalidUser", "The requested user '"+id+"' is invalid.")
}

func segmentNotFound(seg string) *apiError {
	// [Rec] Graph's OData answer to an unknown path segment.
	return newError(400, "BadRequest", "Resource not found for the segment '"+seg+"'.")
}

// keyForm is OData's key syntax, as in the delta links Graph hands out:
// mailFolders('{id}') (GRAPH.md 6.1).
var keyForm = regexp.MustCompile(`^([A-Za-z]+)\('([^']*)'\)$`)

// keySegments spells name('key') as the two segments name/key.
func keySegments(segs []string) []string {
	var out []string
	for _, s := range segs {
		if m := keyForm.FindStringSubmatch(s); m != nil {
			out = append(out, m[1], m[2])
		} else {
			out = append(out, s)
		}
	}
	return out
}

// match finds the handler for the path after the user.
func match(method string, segs []string, c *call) (route, *apiError) {
	kw := func(i int) string {
		if i < len(segs) {
			return strings.ToLower(segs[i])
		}
		return ""
	}
	n := len(segs)
	var rs map[string]route
	switch {
	case n == 0:
		rs = map[string]route{"GET": {permUser, (*call).getUser}}
	case kw(0) == "sendmail" && n == 1:
		rs = map[string]route{"POST": {permSend, (*call).sendMail}}
	case kw(0) == "mailfolders" && n == 1:
		rs = map[string]route{"GET": {permRead, (*call).listFolders}, "POST": {permWrite, (*call).createFolder}}
	case kw(0) == "mailfolders" && n == 2:
		c.folderRef = segs[1]
		rs = map[string]route{"GET": {permRead, (*call).getFolder}, "PATCH": {permWrite, (*call).updateFolder},
			"DELETE": {permWrite, (*call).deleteFolder}}
	case kw(0) == "mailfolders" && n == 3 && kw(2) == "childfolders":
		c.folderRef = segs[1]
		rs = map[string]route{"GET": {permRead, (*call).listChildFolders}, "POST": {permWrite, (*call).createFolder}}
	case kw(0) == "mailfolders" && n == 3 && kw(2) == "move":
		c.folderRef = segs[1]
		rs = map[string]route{"POST": {permWrite, (*call).moveFolder}}
	case kw(0) == "mailfolders" && kw(2) != "messages":
		return route{}, segmentNotFound(segs[2])
	case kw(0) == "mailfolders" && n == 3:
		c.folderRef = segs[1]
		rs = map[string]route{"GET": {permRead, (*call).listMessages}, "POST": {permWrite, (*call).createMessage}}
	case kw(0) == "mailfolders" && n == 4 && kw(3) == "delta":
		// message-delta.md (delta.go).
		c.folderRef = segs[1]
		rs = map[string]route{"GET": {permRead, (*call).delta}}
	case kw(0) == "mailfolders":
		c.folderRef = segs[1]
		return matchMessage(method, segs[2:], c)
	case kw(0) == "messages" && n == 1:
		rs = map[string]route{"GET": {permRead, (*call).listMessages}, "POST": {permWrite, (*call).createMessage}}
	case kw(0) == "messages":
		return matchMessage(method, segs, c)
	default:
		return route{}, segmentNotFound(segs[0])
	}
	return pick(method, rs)
}

// matchMessage routes messages/{id}/….
func matchMessage(method string, segs []string, c *call) (route, *apiError) {
	c.msgRef = segs[1]
	var rs map[string]route
	switch tail := strings.ToLower(strings.Join(segs[2:], "/")); tail {
	case "":
		rs = map[string]route{"GET": {permRead, (*call).getMessage}, "PATCH": {permWrite, (*call).patchMessage},
			"DELETE": {permWrite, (*call).deleteMessage}}
	case "$value":
		rs = map[string]route{"GET": {permRead, (*call).getValue}}
	case "move":
		rs = map[string]route{"POST": {permWrite, (*call).moveMessage}}
	case "copy":
		rs = map[string]route{"POST": {permWrite, (*call).copyMessage}}
	case "send":
		rs = map[string]route{"POST": {permSend, (*call).sendDraft}}
	case "attachments":
		rs = map[string]route{"GET": {permRead, (*call).listAttachments}, "POST": {permWrite, (*call).addAttachment}}
	case "attachments/createuploadsession":
		rs = map[string]route{"POST": {permWrite, (*call).createUploadSession}}
	default:
		return route{}, segmentNotFound(segs[2])
	}
	return pick(method, rs)
}

func pick(method string, rs map[string]route) (route, *apiError) {
	if rt, ok := rs[method]; ok {
		return rt, nil
	}
	// [Rec]
	return route{}, newError(405, "BadRequest", "The HTTP method '"+method+"' is not allowed for this resource.")
}

// immutableIDs: Prefer: IdType="ImmutableId", possibly among other
// preferences and in several Prefer headers (PROTOCOLS.md §3.8; GRAPH.md 5).
func immutableIDs(r *http.Request) bool {
	for _, p := range preferences(r) {
		if k, v, _ := strings.Cut(p, "="); strings.EqualFold(strings.TrimSpace(k), "IdType") &&
			strings.EqualFold(strings.Trim(strings.TrimSpace(v), `"`), "ImmutableId") {
			return true
		}
	}
	return false
}

func preferences(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// checkThrottle applies Throttle: 429 TooManyRequests with the generic
// body and Retry-After (GRAPH.md 7.2, throttling.md "Sample response").
func (s *Server) checkThrottle() *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frac <= 0 {
		return nil
	}
	s.acc += s.frac
	if s.acc < 1-1e-9 {
		return nil
	}
	s.acc--
	e := newError(429, "TooManyRequests", "Please retry again later.")
	e.retryAfter = s.retry
	return e
}

// acquire takes one of the (app, mailbox)'s concurrent request slots:
// Outlook allows 4 (GRAPH.md 7.1, throttling-limits.md); one more is 429
// with the observed ApplicationThrottled body (GRAPH.md 7.2).
func (s *Server) acquire(app, box string) (func(), *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := s.ConcurrencyLimit
	if limit <= 0 {
		limit = 4
	}
	k := flightKey{app, box}
	if s.inflight[k] >= limit {
		e := newError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
		e.bare, e.retryAfter = true, "1"
		return nil, e
	}
	s.inflight[k]++
	s.maxFlight = max(s.maxFlight, s.inflight[k])
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight[k]--; s.inflight[k] <= 0 {
			delete(s.inflight, k)
		}
	}, nil
}

// base is the URL links are built on.
func (s *Server) base(r *http.Request) string {
	if s.URL != "" {
		return strings.TrimRight(s.URL, "/")
	}
	return "https://" + r.Host
}
