package fakegraph

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// round follows a delta round from path to its deltaLink, checking the
// links' shapes (GRAPH.md 6.1); it returns the items, the page sizes and
// the deltaLink.
func (e *env) round(path string, hdr ...string) (items []map[string]any, pages []int, deltaLink string) {
	e.t.Helper()
	for next := path; next != ""; {
		r := e.do("GET", next, e.app, nil, hdr...)
		must(e.t, r, 200)
		j := r.json(e.t)
		if j["@odata.context"] != e.srv.URL+"/v1.0/$metadata#Collection(message)" {
			e.t.Errorf("context %v", j["@odata.context"])
		}
		vs := j["value"].([]any)
		pages = append(pages, len(vs))
		for _, v := range vs {
			items = append(items, v.(map[string]any))
		}
		next, _ = j["@odata.nextLink"].(string)
		deltaLink, _ = j["@odata.deltaLink"].(string)
		if (next == "") == (deltaLink == "") {
			e.t.Fatalf("page with nextLink %q and deltaLink %q", next, deltaLink)
		}
		for _, l := range []string{next, deltaLink} {
			if l == "" {
				continue
			}
			u, err := url.Parse(l)
			prefix := e.srv.URL + "/v1.0/users/" + aliceID + "/mailFolders('"
			if err != nil || !strings.HasPrefix(l, prefix) || !strings.HasSuffix(u.Path, "')/messages/delta") ||
				len(u.Query()) != 1 || (next != "" && u.Query().Get("$skiptoken") == "") || (deltaLink != "" && u.Query().Get("$deltatoken") == "") {
				e.t.Fatalf("link %q", l)
			}
		}
	}
	return items, pages, deltaLink
}

func ids(items []map[string]any) []string {
	var out []string
	for _, it := range items {
		s := it["id"].(string)
		if it["@removed"] != nil {
			s = "-" + s
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func sorted(ss ...string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}

const imm = `IdType="ImmutableId"`

// delta-query-messages.md Example 1: a first round pages through the
// folder, the next reports what changed: created, moved in, updated,
// deleted and moved out (GRAPH.md 6.1–6.3).
func TestDeltaRounds(t *testing.T) {
	e := newEnv(t)
	put := func(folder, subject string) string {
		return e.g.Put(alice, folder, msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: "+subject))
	}
	var msgs []string
	for i := range 25 {
		msgs = append(msgs, put("inbox", fmt.Sprintf("m%02d", i)))
	}
	archived := put("archive", "archived")
	q := url.Values{"$select": {"subject,isRead"}, "$expand": {"singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'Integer 0x1081')"}}
	start := "/v1.0/users/" + alice + "/mailFolders/inbox/messages/delta?" + q.Encode()
	items, pages, link := e.round(start, "Prefer", "odata.maxpagesize=10", "Prefer", imm)
	if fmt.Sprint(pages) != "[10 10 5]" || fmt.Sprint(ids(items)) != fmt.Sprint(sorted(msgs...)) {
		t.Fatalf("pages %v, ids %v", pages, ids(items))
	}
	first := items[0]
	if first["@odata.type"] != "#microsoft.graph.message" || first["subject"] != "m24" || first["from"] != nil || first["@odata.etag"] == nil {
		t.Errorf("item %v", first)
	}
	if ext := first["singleValueExtendedProperties"].([]any); len(ext) != 1 || ext[0].(map[string]any)["id"] != "Integer 0xe08" {
		t.Errorf("extended %v", ext)
	}

	// Changes from Graph and from Outlook's side.
	must(t, e.patch("/v1.0/users/"+alice+"/messages/"+msgs[0], e.app, map[string]any{"isRead": true}), 200)
	must(t, e.patch("/v1.0/users/"+alice+"/messages/"+msgs[1], e.app, map[string]any{
		"singleValueExtendedProperties": []map[string]string{{"id": "Integer 0x1081", "value": "102"}}}), 200)
	e.g.SetFlag(msgs[2], "flagged")
	e.g.SetCategories(msgs[3], []string{"Blue"})
	must(t, e.do("DELETE", "/v1.0/users/"+alice+"/messages/"+msgs[4], e.app, nil), 204)
	e.g.MoveTo(msgs[5], "junkemail")
	e.g.Remove(msgs[6])
	created := put("inbox", "new")
	e.g.MoveTo(archived, "inbox")
	// Moved out and back: still there, reported as an arrival.
	e.g.MoveTo(msgs[7], "archive")
	e.g.MoveTo(msgs[7], "inbox")
	// Came and went between rounds: never seen, not reported.
	e.g.Remove(put("inbox", "transient"))

	items, pages, link2 := e.round(link, "Prefer", imm)
	want := sorted(msgs[0], msgs[1], msgs[2], msgs[3], "-"+msgs[4], "-"+msgs[5], "-"+msgs[6], created, archived, msgs[7])
	if fmt.Sprint(ids(items)) != fmt.Sprint(want) || fmt.Sprint(pages) != "[10]" {
		t.Fatalf("second round %v (pages %v), want %v", ids(items), pages, want)
	}
	for _, it := range items {
		switch it["id"] {
		case msgs[4]:
			if len(it) != 3 || it["@odata.type"] != "#microsoft.graph.message" || it["@removed"].(map[string]any)["reason"] != "deleted" {
				t.Errorf("removed %v", it)
			}
		case msgs[1]:
			if ext := fmt.Sprint(it["singleValueExtendedProperties"]); !strings.Contains(ext, "id:Integer 0x1081 value:102") {
				t.Errorf("0x1081 not in %s", ext)
			}
		}
	}
	if items, _, _ := e.round(link2); len(items) != 0 {
		t.Errorf("third round %v", ids(items))
	}

	// Without immutable ids a removal has the REST id the message had.
	rest := e.do("GET", "/v1.0/users/"+alice+"/messages/"+msgs[8], e.app, nil).json(t)["id"].(string)
	e.g.Remove(msgs[8])
	items, _, _ = e.round(link2)
	if len(items) != 1 || items[0]["id"] != rest {
		t.Errorf("removal %v, want REST id %s", items, rest)
	}
}

// GRAPH.md 6.4: $top caps the whole round, not the page.
func TestDeltaTopCapsTheRound(t *testing.T) {
	e := newEnv(t)
	put25(e)
	items, pages, link := e.round("/v1.0/users/"+alice+"/mailFolders/inbox/messages/delta?$top=5&$select=subject", "Prefer", "odata.maxpagesize=2")
	if fmt.Sprint(pages) != "[2 2 1]" || len(items) != 5 {
		t.Errorf("pages %v", pages)
	}
	// Default page 10, whatever $top.
	if _, pages, _ := e.round("/v1.0/users/" + alice + "/mailFolders/inbox/messages/delta?$top=15"); fmt.Sprint(pages) != "[10 5]" {
		t.Errorf("pages %v", pages)
	}
	// The round's options stay in its tokens: the next round is capped too.
	for _, m := range e.g.Messages(alice, "inbox") {
		e.g.SetRead(m.ID, true)
	}
	if items, _, _ := e.round(link); len(items) != 5 || items[0]["from"] != nil {
		t.Errorf("next round %d items: %v", len(items), items[0])
	}
}

// delta-query-messages.md Example 2: changeType, given in the first
// round, filters the next ones; the first is every message.
func TestDeltaChangeType(t *testing.T) {
	for _, tc := range []struct {
		changeType string
		want       []string
	}{
		{"created", []string{"new"}},
		{"updated", []string{"read"}},
		{"deleted", []string{"-gone"}},
		{"", []string{"-gone", "new", "read"}},
	} {
		t.Run(tc.changeType, func(t *testing.T) {
			e := newEnv(t)
			subjects := map[string]string{}
			put := func(s string) string {
				id := e.g.Put(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: "+s))
				subjects[id] = s
				return id
			}
			read, gone := put("read"), put("gone")
			put("same")
			first, _, link := e.round("/v1.0/users/"+alice+"/mailFolders/inbox/messages/delta?changeType="+tc.changeType, "Prefer", imm)
			if len(first) != 3 {
				t.Fatalf("first round %d", len(first))
			}
			e.g.SetRead(read, true)
			e.g.Remove(gone)
			put("new")
			items, _, _ := e.round(link, "Prefer", imm)
			var got []string
			for _, it := range items {
				s := subjects[it["id"].(string)]
				if it["@removed"] != nil {
					s = "-" + s
				}
				got = append(got, s)
			}
			slices.Sort(got)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// message-delta.md: $filter only receivedDateTime ge|gt, $orderby only
// receivedDateTime desc, no $search.
func TestDeltaFilterAndOrder(t *testing.T) {
	e := newEnv(t)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		e.g.PutAt(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, fmt.Sprintf("Subject: d%d", i)), base.Add(time.Duration(i)*24*time.Hour))
	}
	u := "/v1.0/users/" + alice + "/mailFolders/inbox/messages/delta?$select=subject,receivedDateTime&"
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"$filter=" + url.QueryEscape("receivedDateTime ge 2026-03-03T12:00:00Z"), "[d4 d3 d2]"},
		{"$filter=" + url.QueryEscape("receivedDateTime gt 2026-03-03T12:00:00Z"), "[d4 d3]"},
		{"$orderby=" + url.QueryEscape("receivedDateTime desc"), "[d4 d3 d2 d1 d0]"},
		{"", "[d4 d3 d2 d1 d0]"},
	} {
		items, _, _ := e.round(u + tc.query)
		var got []string
		for _, it := range items {
			got = append(got, it["subject"].(string))
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s: %v, want %s", tc.query, got, tc.want)
		}
	}
	for _, q := range []string{
		"$filter=" + url.QueryEscape("isRead eq false"),
		"$filter=" + url.QueryEscape("receivedDateTime ge yesterday"),
		"$orderby=" + url.QueryEscape("receivedDateTime asc"),
		"$search=" + url.QueryEscape(`"pizza"`),
		"changeType=moved",
		"$top=0",
		"$select=nosuch",
	} {
		mustError(t, e.do("GET", "/v1.0/users/"+alice+"/mailFolders/inbox/messages/delta?"+q, e.app, nil), 400, "BadRequest")
	}
}

// Tokens: expired → 410 SyncStateNotFound (GRAPH.md 9, delta-query-
// overview.md); unparseable or for another folder → 400 [Rec].
func TestDeltaTokens(t *testing.T) {
	e := newEnv(t)
	put25(e)
	u := "/v1.0/users/" + alice + "/mailFolders/inbox/messages/delta"
	r := e.do("GET", u, e.app, nil)
	next := r.json(t)["@odata.nextLink"].(string)
	_, _, link := e.round(u)
	// The key form and the plain form of the folder both take the tokens.
	must(t, e.do("GET", next, e.app, nil), 200)
	must(t, e.do("GET", strings.Replace(link, "mailFolders('"+e.folderIDOf("inbox")+"')", "mailFolders/inbox", 1), e.app, nil), 200)

	archive := strings.Replace(link, "mailFolders('"+e.folderIDOf("inbox")+"')", "mailFolders/archive", 1)
	mustError(t, e.do("GET", archive, e.app, nil), 400, "BadRequest")
	mustError(t, e.do("GET", u+"?$deltatoken=not-a-token!", e.app, nil), 400, "BadRequest")
	mustError(t, e.do("GET", u+"?$skiptoken=e30", e.app, nil), 410, "SyncStateNotFound") // {} : no round

	e.g.ExpireDeltaTokens()
	for _, l := range []string{next, link} {
		r := e.do("GET", l, e.app, nil)
		mustError(t, r, 410, "SyncStateNotFound")
		if !strings.HasPrefix(r.message(), "The sync state generation is not found") {
			t.Errorf("message %q", r.message())
		}
	}
	// A new round works.
	if items, _, _ := e.round(u + "?$top=3"); len(items) != 3 {
		t.Errorf("after expiry: %d", len(items))
	}
	// A deleted folder has no delta.
	f := e.g.AddFolder(alice, "deleteditems", "Old")
	_, _, link = e.round("/v1.0/users/" + alice + "/mailFolders/" + f + "/messages/delta")
	must(t, e.do("DELETE", "/v1.0/users/"+alice+"/mailFolders/"+f, e.app, nil), 204)
	mustError(t, e.do("GET", link, e.app, nil), 404, "ErrorItemNotFound")
}

// BenchmarkDeltaPage is a delta page of 1000 of a folder of 50,000
// messages, with the $select and $expand an IMAP server asks for,
// through the whole handler (auth, routing, rendering, JSON).
func BenchmarkDeltaPage(b *testing.B) {
	e, next := bigFolder(b)
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		e.g.ServeHTTP(rec, e.request(next, "odata.maxpagesize=1000"))
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkDeltaRoundStart is a round's first request on the same
// folder: the snapshot of 50,000 and its first page of 1000.
func BenchmarkDeltaRoundStart(b *testing.B) {
	e, _ := bigFolder(b)
	q := url.Values{"$select": {imapSelect}, "$expand": {imapExpand}}
	u := "/v1.0/users/" + alice + "/mailFolders/inbox/messages/delta?" + q.Encode()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		e.g.ServeHTTP(rec, e.request(u, "odata.maxpagesize=1000"))
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkPut stores a message in a folder however full it is.
func BenchmarkPut(b *testing.B) {
	e := newEnv(b)
	m := msg("Hello.\r\n", "From: Sender <x@fabrikam.example>", "To: "+alice, "Subject: s", "Date: Mon, 02 Jan 2026 15:04:05 +0000")
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; b.Loop(); i++ {
		e.g.PutAt(alice, "inbox", m, at.Add(time.Duration(i%1000)*time.Second))
	}
}

// BenchmarkListPage is a listing page of 1000 deep in the same folder.
func BenchmarkListPage(b *testing.B) {
	e, _ := bigFolder(b)
	q := url.Values{"$select": {imapSelect}, "$expand": {imapExpand}, "$top": {"1000"}, "$skip": {"30000"}}
	u := "/v1.0/users/" + alice + "/mailFolders/inbox/messages?" + q.Encode()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		e.g.ServeHTTP(rec, e.request(u, "odata.maxpagesize=1000"))
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

const (
	imapSelect = "id,subject,from,toRecipients,ccRecipients,receivedDateTime,sentDateTime,isRead,isDraft,flag,categories,internetMessageId,hasAttachments,importance,parentFolderId,changeKey"
	imapExpand = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'Integer 0x1081')"
)

// bigFolder is alice's inbox with 50,000 messages, and the nextLink of a
// delta round over it in pages of 1000.
func bigFolder(b *testing.B) (*env, string) {
	e := newEnv(b)
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 50_000 {
		e.g.PutAt(alice, "inbox", msg("Hello, this is message "+fmt.Sprint(i)+".\r\n", "From: Sender <x@fabrikam.example>", "To: "+alice,
			fmt.Sprintf("Subject: message %d", i), "Message-ID: <"+fmt.Sprint(i)+"@fabrikam.example>", "Date: Mon, 02 Jan 2026 15:04:05 +0000"),
			base.Add(time.Duration(50_000-i)*time.Minute)) // newest first: the folder sorts once
	}
	q := url.Values{"$select": {imapSelect}, "$expand": {imapExpand}}
	rec := httptest.NewRecorder()
	e.g.ServeHTTP(rec, e.request("/v1.0/users/"+alice+"/mailFolders/inbox/messages/delta?"+q.Encode(), "odata.maxpagesize=1000"))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "$skiptoken") {
		b.Fatalf("%d %.300s", rec.Code, rec.Body)
	}
	var page struct {
		Next string `json:"@odata.nextLink"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		b.Fatal(err)
	}
	return e, page.Next
}
