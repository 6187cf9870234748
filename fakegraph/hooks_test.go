package fakegraph

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// extended asks for ids by $expand and returns id → value.
func (e *env) extended(id string, ids ...string) map[string]string {
	e.t.Helper()
	var filter []string
	for _, x := range ids {
		filter = append(filter, "id eq '"+x+"'")
	}
	q := url.Values{"$select": {"id"}, "$expand": {"singleValueExtendedProperties($filter=" + strings.Join(filter, " or ") + ")"}}
	r := e.do("GET", "/v1.0/users/"+alice+"/messages/"+id+"?"+q.Encode(), e.app, nil)
	must(e.t, r, 200)
	out := map[string]string{}
	ext, _ := r.json(e.t)["singleValueExtendedProperties"].([]any)
	for _, p := range ext {
		p := p.(map[string]any)
		out[p["id"].(string)] = p["value"].(string)
	}
	return out
}

// PidTagLastVerbExecuted and other Integer properties may be set on any
// message (PROTOCOLS.md §3.4; DAV's \Answered); the computed ones stay
// the store's.
func TestPatchExtendedProperties(t *testing.T) {
	e := newEnv(t)
	id := e.g.Put(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: s"))
	u := "/v1.0/users/" + alice + "/messages/" + id
	patch := func(props ...string) resp {
		var ps []map[string]string
		for i := 0; i+1 < len(props); i += 2 {
			ps = append(ps, map[string]string{"id": props[i], "value": props[i+1]})
		}
		return e.patch(u, e.app, map[string]any{"singleValueExtendedProperties": ps})
	}
	must(t, patch("Integer 0x1081", "102", "Integer 0x1080", "261"), 200)
	got := e.extended(id, "Integer 0x0E08", "Integer 0x1081", "Integer 0x1080", "Integer 0x0E07", "Integer 0x0E23")
	if got["Integer 0x1081"] != "102" || got["Integer 0x1080"] != "261" || got["Integer 0xe07"] != "0" || got["Integer 0xe08"] == "" || got["Integer 0xe23"] == "" {
		t.Errorf("extended %v", got)
	}
	// Read-only and creation-only ones are ignored.
	size := got["Integer 0xe08"]
	must(t, patch("Integer 0x0E08", "1", "Integer 0x0E07", "9", "Integer 0x0E23", "7"), 200)
	if got := e.extended(id, "Integer 0x0E08", "Integer 0x0E07", "Integer 0x0E23"); got["Integer 0xe08"] != size || got["Integer 0xe07"] != "0" || got["Integer 0xe23"] == "7" {
		t.Errorf("computed %v", got)
	}
	// PidTagFlagStatus is the flag.
	must(t, patch("Integer 0x1090", "2"), 200)
	if m, _ := e.g.Message(id); m.Flag != "flagged" || m.Extended["Integer 0x1081"] != "102" || len(m.Extended) != 2 {
		t.Errorf("snapshot flag %q extended %v", m.Flag, m.Extended)
	}
	e.g.SetFlag(id, "complete")
	if got := e.extended(id, "Integer 0x1090"); got["Integer 0x1090"] != "1" {
		t.Errorf("0x1090 %v", got)
	}
	mustError(t, patch("Integer 0x1081", "reply"), 400, "ErrorInvalidExtendedPropertyValue")
	mustError(t, patch(" ", "1"), 400, "ErrorInvalidExtendedProperty")
	if m, _ := e.g.Message(id); m.Extended["Integer 0x1081"] != "102" {
		t.Errorf("a refused PATCH changed it: %v", m.Extended)
	}
	// Other types are stored by id too.
	must(t, patch("String {00020386-0000-0000-C000-000000000046} Name X-Custom", "v"), 200)
	if got := e.extended(id, "String {00020386-0000-0000-C000-000000000046} Name X-Custom"); len(got) != 1 {
		t.Errorf("named %v", got)
	}
}

// A JSON create takes receivedDateTime and sentDateTime ([Src] DAV
// createMessage), isRead, categories, flag, internetMessageId, extended
// properties and file attachments (user-post-messages.md; GRAPH.md 4.4).
func TestJSONCreate(t *testing.T) {
	e := newEnv(t)
	f := e.g.AddFolder(alice, "inbox", "Appended")
	later := e.g.Put(alice, f, msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: stored now"))
	body := map[string]any{
		"subject": "appended", "body": map[string]string{"contentType": "text", "content": "hello"},
		"from":             map[string]any{"emailAddress": map[string]string{"address": "x@fabrikam.example"}},
		"toRecipients":     []any{map[string]any{"emailAddress": map[string]string{"address": alice}}},
		"receivedDateTime": "2024-05-06T07:08:09Z", "sentDateTime": "2024-05-06T07:00:00Z",
		"isRead": true, "categories": []string{"Red", "$label1"}, "flag": map[string]string{"flagStatus": "flagged"},
		"internetMessageId":             "<a1@fabrikam.example>",
		"singleValueExtendedProperties": []map[string]string{{"id": "Integer 0x0E07", "value": "4"}, {"id": "Integer 0x1081", "value": "103"}},
		"attachments": []map[string]any{{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin", "contentType": "application/octet-stream",
			"contentBytes": base64.StdEncoding.EncodeToString(pattern(3000, 7))}},
	}
	r := e.postJSON("/v1.0/users/"+alice+"/mailFolders/"+f+"/messages", e.app, body, "Prefer", imm)
	must(t, r, 201)
	j := r.json(t)
	if j["isDraft"] != false || j["isRead"] != true || j["receivedDateTime"] != "2024-05-06T07:08:09Z" || j["sentDateTime"] != "2024-05-06T07:00:00Z" ||
		fmt.Sprint(j["categories"]) != "[Red $label1]" || j["flag"].(map[string]any)["flagStatus"] != "flagged" ||
		j["internetMessageId"] != "<a1@fabrikam.example>" || j["hasAttachments"] != true || j["parentFolderId"] != f {
		t.Errorf("created %v", j)
	}
	id := j["id"].(string)
	m, ok := e.g.Message(id)
	if !ok || !m.Received.Equal(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)) || m.Extended["Integer 0x1081"] != "103" || m.Folder != f || m.Flag != "flagged" {
		t.Errorf("snapshot %+v", m)
	}
	r = e.do("GET", "/v1.0/users/"+alice+"/messages/"+id+"/$value", e.app, nil)
	must(t, r, 200)
	if got := attachments(t, r.body)["a.bin"]; !bytes.Equal(got, pattern(3000, 7)) {
		t.Errorf("attachment %d bytes", len(got))
	}
	if !strings.Contains(header(t, r.body, "Date"), "06 May 2024 07:00:00") {
		t.Errorf("Date %q", header(t, r.body, "Date"))
	}
	// Listed by its receivedDateTime: older than the one stored now.
	if ms := e.g.Messages(alice, f); len(ms) != 2 || ms[0].ID != id || ms[1].ID != later {
		t.Errorf("order %v", ms)
	}
	// Without 0x0E07 it is a draft; an explicit isRead false with the read bit.
	r = e.postJSON("/v1.0/users/"+alice+"/messages", e.app, map[string]any{"subject": "d", "isRead": false,
		"singleValueExtendedProperties": []map[string]string{{"id": "Integer 0x0E07", "value": "1"}}})
	must(t, r, 201)
	if j := r.json(t); j["isDraft"] != false || j["isRead"] != false {
		t.Errorf("flags %v %v", j["isDraft"], j["isRead"])
	}
	mustError(t, e.postJSON("/v1.0/users/"+alice+"/messages", e.app, map[string]any{"receivedDateTime": "yesterday"}), 400, "RequestBodyRead")
}

// The hooks change the mailbox from Outlook's side; delta sees them.
func TestHooks(t *testing.T) {
	e := newEnv(t)
	id := e.g.Put(alice, "inbox", msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: s"))
	_, _, link := e.round("/v1.0/users/"+alice+"/mailFolders/inbox/messages/delta?$select=isRead,flag,categories", "Prefer", imm)
	e.g.SetRead(id, true)
	e.g.SetFlag(id, "complete")
	e.g.SetCategories(id, []string{"Green"})
	items, _, link := e.round(link, "Prefer", imm)
	if len(items) != 1 || items[0]["isRead"] != true || items[0]["flag"].(map[string]any)["flagStatus"] != "complete" || fmt.Sprint(items[0]["categories"]) != "[Green]" {
		t.Errorf("delta %v", items)
	}
	m, _ := e.g.Message(id)
	if !m.IsRead || m.Flag != "complete" || fmt.Sprint(m.Categories) != "[Green]" || m.Folder != e.folderIDOf("inbox") {
		t.Errorf("snapshot %+v", m)
	}
	f := e.g.AddFolder(alice, "msgfolderroot", "Elsewhere")
	e.g.MoveTo(id, f)
	if m, _ := e.g.Message(id); m.Folder != f {
		t.Errorf("moved to %q", m.Folder)
	}
	if items, _, _ := e.round(link, "Prefer", imm); len(items) != 1 || items[0]["@removed"] == nil {
		t.Errorf("delta after move %v", items)
	}
	e.g.Remove(id)
	if _, ok := e.g.Message(id); ok {
		t.Error("removed message still there")
	}
	mustError(t, e.do("GET", "/v1.0/users/"+alice+"/messages/"+id, e.app, nil), 404, "ErrorItemNotFound")
	for name, f := range map[string]func(){
		"SetRead":  func() { e.g.SetRead(id, true) },
		"MoveTo":   func() { e.g.MoveTo(e.g.Put(alice, "inbox", msg("x\r\n")), "nowhere") },
		"SetFlag":  func() { e.g.SetFlag(e.g.Put(alice, "inbox", msg("x\r\n")), "red") },
		"PutIn":    func() { e.g.Put(alice, "AAMkAGnotthereAAAAAAAAAAAAA=", msg("x\r\n")) },
		"Messages": func() { e.g.Messages("nobody@contoso.com", "inbox") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

// BreakValue cuts $value partway: the client meets an unexpected EOF.
func TestBreakValue(t *testing.T) {
	e := newEnv(t)
	m := msg(strings.Repeat("0123456789", 1000)+"\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: big")
	id := e.g.Put(alice, "inbox", m)
	get := func() ([]byte, error) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", e.srv.URL+"/v1.0/users/"+alice+"/messages/"+id+"/$value", nil)
		req.Header.Set("Authorization", "Bearer "+e.app)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		return io.ReadAll(res.Body)
	}
	e.g.BreakValue(1000)
	for range 5 { // more than the concurrency limit: slots are released
		b, err := get()
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 1000 || !bytes.Equal(b, m[:1000]) {
			t.Fatalf("got %d bytes, %v", len(b), err)
		}
	}
	e.g.BreakValue(-1)
	if b, err := get(); err != nil || !bytes.Equal(b, m) {
		t.Errorf("after BreakValue(-1): %d bytes, %v", len(b), err)
	}
}
