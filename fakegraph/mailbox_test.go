package fakegraph

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func put25(e *env) []string {
	var ids []string
	for i := range 25 {
		ids = append(ids, e.g.Put(alice, "inbox", msg("n\r\n", "From: x@fabrikam.example", "To: "+alice, fmt.Sprintf("Subject: m%02d", i))))
	}
	return ids
}

// GRAPH.md 2.1–2.5: $top is the page size; follow @odata.nextLink.
func TestPagingNextLink(t *testing.T) {
	e := newEnv(t)
	put25(e)
	next := "/v1.0/users/" + alice + "/mailFolders/inbox/messages?$top=10&$select=subject,isRead&$orderby=receivedDateTime%20asc"
	var subjects []string
	var pages []int
	for next != "" {
		r := e.do("GET", next, e.app, nil)
		must(t, r, 200)
		j := r.json(t)
		vs := j["value"].([]any)
		pages = append(pages, len(vs))
		for _, v := range vs {
			m := v.(map[string]any)
			if m["id"] == nil || m["@odata.etag"] == nil || m["from"] != nil {
				t.Fatalf("$select: %v", m)
			}
			subjects = append(subjects, m["subject"].(string))
		}
		next, _ = j["@odata.nextLink"].(string)
		if next != "" && !strings.HasPrefix(next, e.srv.URL+"/v1.0/") {
			t.Fatalf("nextLink %q", next)
		}
	}
	if fmt.Sprint(pages) != "[10 10 5]" || subjects[0] != "m00" || subjects[24] != "m24" {
		t.Fatalf("pages %v, subjects %v", pages, subjects)
	}
	// Default: 10, newest first [Rec]; maxpagesize honoured.
	r := e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox/messages", e.app, nil)
	if j := r.json(t); len(j["value"].([]any)) != 10 || j["value"].([]any)[0].(map[string]any)["subject"] != "m24" {
		t.Errorf("default page: %d", len(j["value"].([]any)))
	}
	r = e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox/messages", e.app, nil, "Prefer", "odata.maxpagesize=7")
	if j := r.json(t); len(j["value"].([]any)) != 7 || r.header.Get("Preference-Applied") != "odata.maxpagesize=7" {
		t.Errorf("maxpagesize: %d %q", len(j["value"].([]any)), r.header.Get("Preference-Applied"))
	}
	for _, top := range []string{"", "0", "1001", "x"} {
		r = e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox/messages?$top="+top, e.app, nil)
		mustError(t, r, 400, "BadRequest")
	}
	if !strings.HasPrefix(r.message(), "Invalid value 'x' for $top query option found.") {
		t.Errorf("message %q", r.message())
	}
}

// GRAPH.md 2.5, 2.6: PR_MESSAGE_SIZE by extended property; $value.
func TestSizeAndValue(t *testing.T) {
	e := newEnv(t)
	m := msg("hello\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: s")
	id := e.g.Put(alice, "inbox", m)
	q := url.Values{"$expand": {"singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')"}, "$select": {"id"}}
	r := e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox/messages?"+q.Encode(), e.app, nil)
	must(t, r, 200)
	want := `"singleValueExtendedProperties":[{"id":"Integer 0xe08","value":"` + strconv.Itoa(len(m)+512) + `"}]`
	if !strings.Contains(string(r.body), want) {
		t.Errorf("got %s, want %s", r.body, want)
	}
	r = e.do("GET", "/v1.0/users/"+alice+"/messages/"+id+"/$value", e.app, nil)
	must(t, r, 200)
	if r.header.Get("Content-Type") != "text/plain" || !bytes.Equal(r.body, m) {
		t.Errorf("$value %q: %q", r.header.Get("Content-Type"), r.body)
	}
	r = e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox", e.app, nil)
	j := r.json(t)
	if j["displayName"] != "Inbox" || j["totalItemCount"] != 1.0 || j["unreadItemCount"] != 1.0 || j["isHidden"] != false || j["parentFolderId"] == nil {
		t.Errorf("folder %v", j)
	}
}

// outlook-immutable-id.md, GRAPH.md 4.2–4.5: REST ids change on move,
// immutable ones do not; both are accepted.
func TestIDsMoveDelete(t *testing.T) {
	e := newEnv(t)
	imm := e.g.Put(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: s"))
	if len(imm) != 72 {
		t.Errorf("immutable id %d chars", len(imm))
	}
	u := "/v1.0/users/" + alice + "/messages/"
	r := e.do("GET", u+imm, e.app, nil)
	must(t, r, 200)
	rest := r.json(t)["id"].(string)
	if rest == imm || len(rest) < 130 {
		t.Fatalf("REST id %q", rest)
	}
	// The preference among others, or in a header of its own.
	for _, hdr := range [][]string{{"Prefer", `outlook.body-content-type="text", IdType="ImmutableId"`},
		{"Prefer", `outlook.body-content-type="text"`, "Prefer", `IdType="ImmutableId"`}} {
		r = e.do("GET", u+rest, e.app, nil, hdr...)
		if r.json(t)["id"] != imm {
			t.Errorf("%v: id %v", hdr, r.json(t)["id"])
		}
	}
	r = e.postJSON(u+rest+"/move", e.app, map[string]string{"destinationId": "archive"})
	must(t, r, 201)
	moved := r.json(t)["id"].(string)
	archive := e.do("GET", "/v1.0/users/"+alice+"/mailFolders/archive", e.app, nil).json(t)["id"]
	if moved == rest || r.json(t)["parentFolderId"] != archive {
		t.Errorf("move: id %q parent %v", moved, r.json(t)["parentFolderId"])
	}
	mustError(t, e.do("GET", u+rest, e.app, nil), 404, "ErrorItemNotFound")
	must(t, e.do("GET", u+imm, e.app, nil), 200)
	must(t, e.do("GET", u+moved, e.app, nil), 200)
	mustError(t, e.do("GET", u+"not*an*id", e.app, nil), 400, "ErrorInvalidIdMalformed")
	mustError(t, e.postJSON(u+imm+"/move", e.app, map[string]string{"destinationId": "nosuchfolder"}), 400, "ErrorInvalidIdMalformed")
	if n := len(e.g.Messages(alice, "archive")); n != 1 {
		t.Errorf("archive: %d", n)
	}

	// message-delete.md: to Recoverable Items, not Deleted Items.
	must(t, e.do("DELETE", u+imm, e.app, nil), 204)
	if len(e.g.Messages(alice, "recoverableitemsdeletions")) != 1 || len(e.g.Messages(alice, "deleteditems")) != 0 || len(e.g.Messages(alice, "archive")) != 0 {
		t.Error("delete did not go to recoverableitemsdeletions")
	}
}

// GRAPH.md 4.1.
func TestPatch(t *testing.T) {
	e := newEnv(t)
	id := e.g.Put(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: s"))
	u := "/v1.0/users/" + alice + "/messages/" + id
	r := e.patch(u, e.app, map[string]any{"isRead": true, "flag": map[string]string{"flagStatus": "flagged"}, "categories": []string{"Red"}})
	must(t, r, 200)
	if j := r.json(t); j["isRead"] != true || j["flag"].(map[string]any)["flagStatus"] != "flagged" {
		t.Errorf("patched %v", j)
	}
	if m := e.g.Messages(alice, "inbox"); !m[0].IsRead {
		t.Error("not read")
	}
	mustError(t, e.patch(u, e.app, map[string]any{"subject": "new"}), 400, "ErrorInvalidPropertyUpdateSentMessage")
	r = e.patch(u, e.app, map[string]any{"isUnread": true})
	mustError(t, r, 400, "RequestBodyRead")
	if !strings.HasPrefix(r.message(), "The property 'isUnread' does not exist on type 'microsoft.graph.message'.") {
		t.Errorf("message %q", r.message())
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	u := "/v1.0/users/" + alice + "/mailFolders/inbox"
	r := e.do("GET", u, "", nil)
	mustError(t, r, 401, "InvalidAuthenticationToken")
	if r.message() != "Access token is empty." || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("%q %q", r.message(), r.header.Get("WWW-Authenticate"))
	}
	mustError(t, e.do("GET", u, "at-never-issued", nil), 401, "InvalidAuthenticationToken")
	tok := e.appToken("reader", "https://graph.microsoft.com/.default")
	must(t, e.do("GET", u, tok, nil), 200)
	e.idp.ExpireAccess(alice)
	r = e.do("GET", u, tok, nil)
	if r.status != 401 || r.message() != "Access token has expired or is not yet valid." {
		t.Errorf("expired: %d %s", r.status, r.body)
	}
	e.app = e.appToken("relay", "https://graph.microsoft.com/.default")

	// An Outlook token is for another audience.
	outlook := e.delegatedToken(alice, "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access")
	r = e.do("GET", "/v1.0/me/mailFolders/inbox", outlook, nil)
	if r.status != 401 || !strings.Contains(r.message(), "Invalid audience") {
		t.Errorf("outlook token: %d %s", r.status, r.body)
	}
	// GRAPH.md 8.4: /me with an app-only token is a 400.
	mustError(t, e.do("GET", "/v1.0/me/mailFolders/inbox", e.app, nil), 400, "BadRequest")
	// Delegated: own mailbox by /me or /users, nobody else's.
	me := e.delegatedToken(alice, "https://graph.microsoft.com/Mail.ReadWrite offline_access")
	must(t, e.do("GET", "/v1.0/me/mailFolders/inbox", me, nil), 200)
	must(t, e.do("GET", "/v1.0/users/ALICE@contoso.com/mailFolders/inbox", me, nil), 200)
	mustError(t, e.do("GET", "/v1.0/users/"+bob+"/mailFolders/inbox", me, nil), 403, "ErrorAccessDenied")
	// Permissions (PROTOCOLS.md §3.1, GRAPH.md 8.3).
	m := msg("x\r\n", "From: "+alice, "To: "+bob, "Subject: s")
	mustError(t, e.postMIME("/v1.0/me/sendMail", me, m), 403, "ErrorAccessDenied")
	must(t, e.postMIME("/v1.0/me/sendMail", e.delegatedToken(alice, "Mail.Send"), m), 202)
	reader := e.appToken("reader", "https://graph.microsoft.com/.default")
	mustError(t, e.postMIME("/v1.0/users/"+alice+"/sendMail", reader, m), 403, "ErrorAccessDenied")
	mustError(t, e.postJSON("/v1.0/users/"+alice+"/messages", reader, map[string]any{"subject": "x"}), 403, "ErrorAccessDenied")
	// GRAPH.md 8.5.
	r = e.do("GET", "/v1.0/users/nobody@contoso.com/messages", e.app, nil)
	mustError(t, r, 404, "ErrorInvalidUser")
	if r.message() != "The requested user 'nobody@contoso.com' is invalid." {
		t.Errorf("message %q", r.message())
	}
}

func (s *Server) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.inflight {
		n += v
	}
	return n
}

// GRAPH.md 7.1, 7.2: 4 concurrent requests per app and mailbox.
func TestConcurrencyLimit(t *testing.T) {
	e := newEnv(t)
	e.g.Latency = 400 * time.Millisecond
	u := "/v1.0/users/" + alice + "/mailFolders/inbox"
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range 4 {
		wg.Go(func() { codes[i] = e.do("GET", u, e.app, nil).status })
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.g.inFlight() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r := e.do("GET", u, e.app, nil)
	if r.status != 429 || r.header.Get("Retry-After") != "1" ||
		string(r.body) != `{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}` {
		t.Errorf("5th: %d %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	// Another mailbox of the same app has its own slots.
	must(t, e.do("GET", "/v1.0/users/"+bob+"/mailFolders/inbox", e.app, nil), 200)
	wg.Wait()
	if fmt.Sprint(codes) != "[200 200 200 200]" || e.g.MaxInFlight() != 4 || e.g.Throttled() != 1 {
		t.Errorf("codes %v, max in flight %d, throttled %d", codes, e.g.MaxInFlight(), e.g.Throttled())
	}
}

func TestThrottleAndDown(t *testing.T) {
	e := newEnv(t)
	u := "/v1.0/users/" + alice + "/mailFolders/inbox"
	e.g.Throttle(0.5, "2.128")
	var n429 int
	for range 4 {
		r := e.do("GET", u, e.app, nil)
		if r.status == 429 {
			n429++
			if r.code() != "TooManyRequests" || r.message() != "Please retry again later." || r.header.Get("Retry-After") != "2.128" {
				t.Errorf("429: %q %s", r.header.Get("Retry-After"), r.body)
			}
		}
	}
	if n429 != 2 || e.g.Throttled() != 2 {
		t.Errorf("429s %d, Throttled %d", n429, e.g.Throttled())
	}
	e.g.Throttle(0, "")
	must(t, e.do("GET", u, e.app, nil), 200)
	e.g.SetDown(true)
	r := e.do("GET", u, e.app, nil)
	if r.status != 503 || r.code() != "ServiceUnavailable" || r.header.Get("Retry-After") != "1" {
		t.Errorf("down: %d %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	e.g.SetDown(false)
	must(t, e.do("GET", u, e.app, nil), 200)
	if e.g.Requests() != 7 || e.g.Throttled() != 2 {
		t.Errorf("Requests %d, Throttled %d", e.g.Requests(), e.g.Throttled())
	}
}
