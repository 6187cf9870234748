package fakegraph

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"strings"
	"testing"

	"mailproxy/idp"
)

const (
	alice   = "alice@contoso.com"
	aliceID = "6e1ad3a0-6f43-4c3e-9a59-2d1e6a8b0c11"
	bob     = "bob@contoso.com"
	bobID   = "0f6f3b9e-5d2c-4b7a-8e1f-3c4d5e6f7a8b"
)

type env struct {
	t   testing.TB
	idp *idp.Server
	g   *Server
	srv *httptest.Server
	app string // Mail.Send + Mail.ReadWrite app-only token
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ip := idp.New()
	g := New(ip)
	srv := httptest.NewTLSServer(g)
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	g.AddMailbox(alice, aliceID)
	g.AddMailbox(bob, bobID)
	ip.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "relay", Secret: "secret", Mailbox: alice,
		Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
	ip.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "reader", Secret: "secret", Mailbox: alice,
		Roles: []string{"Mail.Read"}})
	ip.AddPublicApp(idp.PublicApp{Tenant: "contoso", ClientID: "desktop"})
	e := &env{t: t, idp: ip, g: g, srv: srv}
	e.app = e.appToken("relay", "https://graph.microsoft.com/.default")
	return e
}

// token asks the idp's token endpoint through its handler.
func (e *env) token(form url.Values) string {
	e.t.Helper()
	req := httptest.NewRequest("POST", "https://login.test/contoso/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	e.idp.ServeHTTP(rec, req)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.AccessToken == "" {
		e.t.Fatalf("token: %d %s", rec.Code, rec.Body)
	}
	return out.AccessToken
}

func (e *env) appToken(clientID, scope string) string {
	return e.token(url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID},
		"client_secret": {"secret"}, "scope": {scope}})
}

// delegatedToken is a person's token for mailbox with scope (refresh
// token grant of the public app).
func (e *env) delegatedToken(mailbox, scope string) string {
	rt := "rt-" + base64.RawURLEncoding.EncodeToString([]byte(mailbox+" "+scope))
	e.idp.AddRefreshToken(rt, mailbox)
	return e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {"desktop"}, "refresh_token": {rt}, "scope": {scope}})
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

// graphError is the error body's code and message.
func (r resp) code() string {
	var out struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal(r.body, &out)
	return out.Error.Code
}

func (r resp) message() string {
	var out struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal(r.body, &out)
	return out.Error.Message
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("not JSON (%d): %q", r.status, r.body)
	}
	return out
}

// do sends a request; hdr is name, value pairs. A path starting with / is
// on the server.
func (e *env) do(method, path, token string, body []byte, hdr ...string) resp {
	e.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = e.srv.URL + path
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// request is a GET of path with the app's token and Prefer, for calling
// the handler directly.
func (e *env) request(path, prefer string) *http.Request {
	if strings.HasPrefix(path, "/") {
		path = e.srv.URL + path
	}
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+e.app)
	req.Header.Add("Prefer", prefer)
	return req
}

func (e *env) postJSON(path, token string, v any, hdr ...string) resp {
	e.t.Helper()
	b, _ := json.Marshal(v)
	return e.do("POST", path, token, b, append([]string{"Content-Type", "application/json"}, hdr...)...)
}

func (e *env) patch(path, token string, v any, hdr ...string) resp {
	e.t.Helper()
	b, _ := json.Marshal(v)
	return e.do("PATCH", path, token, b, append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// postMIME posts base64 MIME, wrapped at 76 columns as the doc's example.
func (e *env) postMIME(path, token string, msg []byte, hdr ...string) resp {
	e.t.Helper()
	return e.do("POST", path, token, b64wrap(msg), append([]string{"Content-Type", "text/plain"}, hdr...)...)
}

func b64wrap(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	return out.Bytes()
}

// msg is a CRLF message from header lines and a body.
func msg(body string, headers ...string) []byte {
	return []byte(strings.Join(headers, "\r\n") + "\r\n\r\n" + body)
}

func must(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
}

func mustError(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status || r.code() != code {
		t.Fatalf("got %d %q, want %d %q: %s", r.status, r.code(), status, code, r.body)
	}
}

func header(t *testing.T, m []byte, name string) string {
	t.Helper()
	pm, err := mail.ReadMessage(bytes.NewReader(m))
	if err != nil {
		t.Fatalf("delivered MIME does not parse: %v\n%s", err, m)
	}
	return pm.Header.Get(name)
}

// attachments reads the top-level multipart/mixed's base64 parts by file
// name.
func attachments(t *testing.T, m []byte) map[string][]byte {
	t.Helper()
	pm, err := mail.ReadMessage(bytes.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(pm.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", pm.Header.Get("Content-Type"), err)
	}
	out := map[string][]byte{}
	mr := multipart.NewReader(pm.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		if p.FileName() == "" {
			continue
		}
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
			if b, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b))); err != nil {
				t.Fatal(err)
			}
		}
		out[p.FileName()] = b
	}
	return out
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}
