package fakegraph

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// Graph delivers MIME to the To/Cc/Bcc header addresses only and strips
// Bcc from what recipients get; an envelope-only address is lost
// (GRAPH.md 1.3, 1.4).
func TestSendMailMIMEHeaderRecipientsOnly(t *testing.T) {
	e := newEnv(t)
	m := msg("Hello.\r\n",
		"From: Alice <alice@contoso.com>",
		"To: Bob <Bob@Contoso.com>, carol@fabrikam.example",
		"Cc: bob@contoso.com",
		"Bcc: dave@fabrikam.example",
		"Subject: hi",
		"Date: Mon, 02 Jan 2026 15:04:05 +0000",
		"Message-ID: <1@contoso.com>")
	// An SMTP relay got RCPT TO eve@fabrikam.example too, but she is in no
	// header: Graph has no envelope to give her address in.
	r := e.postMIME("/v1.0/users/"+alice+"/sendMail", e.app, m)
	must(t, r, 202)
	if len(r.body) != 0 {
		t.Errorf("202 body %q, want empty", r.body)
	}
	if got := e.g.Delivered("eve@fabrikam.example"); len(got) != 0 {
		t.Errorf("envelope-only address delivered: %d", len(got))
	}
	stripped := bytes.Replace(m, []byte("Bcc: dave@fabrikam.example\r\n"), nil, 1)
	for _, a := range []string{bob, "carol@fabrikam.example", "dave@fabrikam.example"} {
		d := e.g.Delivered(a)
		if len(d) != 1 {
			t.Fatalf("%s got %d copies, want 1 (named twice counts once)", a, len(d))
		}
		if !bytes.Equal(d[0].MIME, stripped) {
			t.Errorf("%s got\n%s\nwant\n%s", a, d[0].MIME, stripped)
		}
	}
	inbox := e.g.Messages(bob, "inbox")
	if len(inbox) != 1 || inbox[0].ID == "" || inbox[0].IsRead || inbox[0].Bcc != nil || inbox[0].From != alice {
		t.Fatalf("bob's inbox: %+v", inbox)
	}
	if d := e.g.Delivered(bob); d[0].ID != inbox[0].ID {
		t.Errorf("Delivered id %q, inbox id %q", d[0].ID, inbox[0].ID)
	}
	sent := e.g.Messages(alice, "sentitems")
	if len(sent) != 1 || !bytes.Equal(sent[0].MIME, m) || len(sent[0].Bcc) != 1 {
		t.Fatalf("sent items keep the Bcc: %+v", sent)
	}
}

func TestSendMailErrors(t *testing.T) {
	e := newEnv(t)
	path := "/v1.0/users/" + alice + "/sendMail"
	from := func(f string) []byte { return msg("x\r\n", "From: "+f, "To: "+bob, "Subject: s") }

	// GRAPH.md 1.6: From other than the mailbox without Send As.
	r := e.postMIME(path, e.app, from("ceo@contoso.com"))
	mustError(t, r, 403, "ErrorSendAsDenied")
	if !strings.HasSuffix(r.message(), "Cannot submit message.") {
		t.Errorf("message %q", r.message())
	}
	e.g.AllowSendAs(alice, "CEO@contoso.com")
	must(t, e.postMIME(path, e.app, from("ceo@contoso.com")), 202)

	// GRAPH.md 1.5.
	r = e.postMIME(path, e.app, msg("x\r\n", "From: "+alice, "To: Undisclosed recipients:;", "Subject: s"))
	mustError(t, r, 400, "ErrorInvalidRecipients")

	// GRAPH.md 1.2.
	r = e.do("POST", path, e.app, []byte("not base64!!"), "Content-Type", "text/plain")
	mustError(t, r, 400, "ErrorMimeContentInvalidBase64String")

	// GRAPH.md 1.9.
	for _, ct := range []string{"application/octet-stream", "message/rfc822", ""} {
		r = e.do("POST", path, e.app, b64wrap(from(alice)), "Content-Type", ct)
		mustError(t, r, 415, "RequestBodyRead")
	}

	// GRAPH.md 1.8: the limit is 4,194,304 characters of request body. A
	// 3,145,728-byte MIME is exactly that in base64 (unwrapped).
	head := "From: " + alice + "\r\nTo: " + bob + "\r\nSubject: big\r\n\r\n"
	big := []byte(head + strings.Repeat("a", 3<<20-len(head)))
	enc := []byte(base64.StdEncoding.EncodeToString(big))
	if len(enc) != 4194304 {
		t.Fatalf("len %d", len(enc))
	}
	must(t, e.do("POST", path, e.app, enc, "Content-Type", "text/plain"), 202)
	r = e.do("POST", path, e.app, append(enc, '\n'), "Content-Type", "text/plain")
	if r.status != 413 || string(r.body) != `{"error":{"code":"BadRequest","message":"The maximum request length supported is 4MB."}}` {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// The JSON form: recipients are the lists given; Bcc never reaches the
// recipients' copies; saveToSentItems false keeps no copy.
func TestSendMailJSON(t *testing.T) {
	e := newEnv(t)
	rcpt := func(a string) map[string]any { return map[string]any{"emailAddress": map[string]string{"address": a}} }
	r := e.postJSON("/v1.0/users/"+aliceID+"/sendMail", e.app, map[string]any{
		"message": map[string]any{
			"subject":       "Grüße",
			"body":          map[string]string{"contentType": "Text", "content": "Hallo"},
			"toRecipients":  []any{rcpt(bob)},
			"bccRecipients": []any{rcpt("dave@fabrikam.example")},
		},
		"saveToSentItems": false,
	})
	must(t, r, 202)
	d := e.g.Delivered("dave@fabrikam.example")
	if len(d) != 1 || header(t, d[0].MIME, "Bcc") != "" || header(t, d[0].MIME, "To") == "" {
		t.Fatalf("dave: %+v", d)
	}
	if got := e.g.Messages(alice, "sentitems"); len(got) != 0 {
		t.Errorf("saveToSentItems false, sent items has %d", len(got))
	}
	in := e.g.Messages(bob, "inbox")
	if len(in) != 1 || in[0].From != alice {
		t.Fatalf("bob: %+v", in)
	}
	r = e.do("GET", "/v1.0/users/"+bob+"/messages/"+in[0].ID, e.app, nil)
	must(t, r, 200)
	if j := r.json(t); j["subject"] != "Grüße" || !strings.Contains(j["body"].(map[string]any)["content"].(string), "Hallo") {
		t.Errorf("message %v", j)
	}
	r = e.postJSON("/v1.0/users/"+alice+"/sendMail", e.app, map[string]any{"message": map[string]any{"subjekt": "x"}})
	mustError(t, r, 400, "RequestBodyRead")
	r = e.postJSON("/v1.0/users/"+alice+"/sendMail", e.app, map[string]any{"message": map[string]any{"subject": "x"}, "saveToSentItem": false})
	mustError(t, r, 400, "RequestBodyRead")
}

// A draft made from MIME gets its recipients from the headers; PATCHed
// recipients are what send uses; a large attachment arrives in 3 chunks
// through an upload session and is intact in what recipients get.
func TestDraftUploadSessionSend(t *testing.T) {
	e := newEnv(t)
	base := "/v1.0/users/" + alice
	r := e.postMIME(base+"/messages", e.app, msg("Body text.\r\n",
		"From: "+alice, "To: wrong@fabrikam.example", "Subject: report", "Content-Type: text/plain; charset=utf-8"))
	must(t, r, 201)
	j := r.json(t)
	if j["isDraft"] != true || j["isRead"] != true {
		t.Fatalf("not a read draft: %v", j)
	}
	if to := j["toRecipients"].([]any); len(to) != 1 || !strings.Contains(string(r.body), "wrong@fabrikam.example") {
		t.Fatalf("toRecipients from headers: %v", to)
	}
	id := j["id"].(string)
	rc := func(a string) []any { return []any{map[string]any{"emailAddress": map[string]string{"address": a}}} }
	r = e.patch(base+"/messages/"+id, e.app, map[string]any{"toRecipients": rc(bob),
		"ccRecipients": rc("carol@fabrikam.example"), "bccRecipients": rc("dave@fabrikam.example"), "subject": "Report"})
	must(t, r, 200)

	// Under 3 MB an upload session is refused (outlook-large-attachments.md).
	r = e.postJSON(base+"/messages/"+id+"/attachments/createUploadSession", e.app,
		map[string]any{"AttachmentItem": map[string]any{"attachmentType": "file", "name": "small.bin", "size": 2_999_999}})
	mustError(t, r, 400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")

	data := pattern(3<<20+12345, 7)
	r = e.postJSON(base+"/messages/"+id+"/attachments/createUploadSession", e.app,
		map[string]any{"AttachmentItem": map[string]any{"attachmentType": "file", "name": "big.bin", "size": len(data), "contentType": "application/octet-stream"}})
	must(t, r, 201)
	sess := r.json(t)
	upload := sess["uploadUrl"].(string)
	if !strings.HasPrefix(upload, e.srv.URL+"/upload/") || sess["nextExpectedRanges"].([]any)[0] != "0-" {
		t.Fatalf("session %v", sess)
	}
	put := func(start, end int, hdr ...string) resp {
		cr := fmt.Sprintf("bytes %d-%d/%d", start, end-1, len(data))
		return e.do("PUT", upload, "", data[start:end], append([]string{"Content-Type", "application/octet-stream", "Content-Range", cr}, hdr...)...)
	}
	third := len(data) / 3
	// The doc: no Authorization header on the PUTs.
	mustError(t, put(0, third, "Authorization", "Bearer "+e.app), 401, "InvalidAuthenticationToken")
	r = put(0, third)
	must(t, r, 200)
	if got := r.json(t)["nextExpectedRanges"].([]any); len(got) != 1 || got[0] != itoa(third) {
		t.Fatalf("nextExpectedRanges %v", got)
	}
	// Out of order: 416 with the range expected next.
	r = put(2*third, len(data))
	must(t, r, 416)
	if !strings.Contains(string(r.body), `"nextExpectedRanges":["`+itoa(third)+`"]`) {
		t.Errorf("416 body %s", r.body)
	}
	must(t, put(third, 2*third), 200)
	r = put(2*third, len(data))
	must(t, r, 201)
	if !strings.Contains(r.header.Get("Location"), "/Attachments('") {
		t.Errorf("Location %q", r.header.Get("Location"))
	}
	// A small one through POST attachments.
	small := pattern(2000, 3)
	r = e.postJSON(base+"/messages/"+id+"/attachments", e.app, map[string]any{"@odata.type": "#microsoft.graph.fileAttachment",
		"name": "small.txt", "contentType": "text/plain", "contentBytes": base64.StdEncoding.EncodeToString(small)})
	must(t, r, 201)

	must(t, e.do("POST", base+"/messages/"+id+"/send", e.app, nil), 202)
	if n := len(e.g.Delivered("wrong@fabrikam.example")); n != 0 {
		t.Errorf("the header recipient replaced by PATCH got %d copies", n)
	}
	for _, a := range []string{bob, "carol@fabrikam.example", "dave@fabrikam.example"} {
		d := e.g.Delivered(a)
		if len(d) != 1 {
			t.Fatalf("%s: %d copies", a, len(d))
		}
		m := d[0].MIME
		if header(t, m, "Bcc") != "" || !strings.Contains(header(t, m, "To"), bob) || !strings.Contains(header(t, m, "Cc"), "carol@") {
			t.Errorf("%s headers: To %q Cc %q Bcc %q", a, header(t, m, "To"), header(t, m, "Cc"), header(t, m, "Bcc"))
		}
		if header(t, m, "Subject") != "Report" {
			t.Errorf("Subject %q", header(t, m, "Subject"))
		}
		as := attachments(t, m)
		if !bytes.Equal(as["big.bin"], data) || !bytes.Equal(as["small.txt"], small) {
			t.Errorf("%s: attachments not intact (%d, %d bytes)", a, len(as["big.bin"]), len(as["small.txt"]))
		}
		if !strings.Contains(string(m), "Body text.") {
			t.Errorf("body lost")
		}
	}
	if n := len(e.g.Messages(alice, "drafts")); n != 0 {
		t.Errorf("drafts: %d", n)
	}
	sent := e.g.Messages(alice, "sentitems")
	if len(sent) != 1 || sent[0].IsDraft || len(sent[0].Attachments) != 2 || sent[0].Bcc[0] != "dave@fabrikam.example" {
		t.Fatalf("sent items: %+v", sent)
	}
	// Sending it again: not a draft any more.
	mustError(t, e.do("POST", base+"/messages/"+sent[0].ID+"/send", e.app, nil), 400, "ErrorInvalidOperation")
}

func itoa(n int) string { return strconv.Itoa(n) }

// A draft that is already multipart/mixed keeps its parts; a Graph
// attachment is added beside them; a PATCHed body replaces the first part.
func TestFoldIntoMultipart(t *testing.T) {
	e := newEnv(t)
	base := "/v1.0/users/" + alice
	orig := msg("--b1\r\nContent-Type: text/plain\r\n\r\nold body\r\n--b1\r\n"+
		"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
		base64.StdEncoding.EncodeToString([]byte("%PDF-1.4 one"))+"\r\n--b1--\r\n",
		"From: "+alice, "To: "+bob, "Bcc: dave@fabrikam.example", "Subject: two", "MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="b1"`)
	r := e.postMIME(base+"/mailFolders/drafts/messages", e.app, orig)
	must(t, r, 201)
	id := r.json(t)["id"].(string)
	if r.json(t)["hasAttachments"] != true || len(r.json(t)["bccRecipients"].([]any)) != 1 {
		t.Errorf("created %s", r.body)
	}
	must(t, e.patch(base+"/messages/"+id, e.app, map[string]any{"body": map[string]string{"contentType": "html", "content": "<p>new body</p>"}}), 200)
	r = e.do("GET", base+"/messages/"+id, e.app, nil)
	if b := r.json(t)["body"].(map[string]any); b["contentType"] != "html" || b["content"] != "<p>new body</p>" {
		t.Errorf("body %v", b)
	}
	two := pattern(5000, 9)
	r = e.postJSON(base+"/messages/"+id+"/attachments", e.app, map[string]any{"@odata.type": "#microsoft.graph.fileAttachment",
		"name": "b.bin", "contentBytes": base64.StdEncoding.EncodeToString(two)})
	must(t, r, 201)
	mustError(t, e.postJSON(base+"/messages/"+id+"/attachments", e.app, map[string]any{"name": "c.bin", "contentBytes": "AAAA"}), 400, "RequestBodyRead")
	must(t, e.do("POST", base+"/messages/"+id+"/send", e.app, nil), 202)
	d := e.g.Delivered(bob)
	if len(d) != 1 {
		t.Fatalf("bob: %d", len(d))
	}
	as := attachments(t, d[0].MIME)
	if string(as["a.pdf"]) != "%PDF-1.4 one" || !bytes.Equal(as["b.bin"], two) || len(as) != 2 {
		t.Errorf("attachments %v", as)
	}
	if s := string(d[0].MIME); strings.Contains(s, "old body") || !strings.Contains(s, "new body") || strings.Contains(s, "dave@") {
		t.Errorf("delivered\n%s", s)
	}
	if len(e.g.Delivered("dave@fabrikam.example")) != 1 {
		t.Error("Bcc recipient lost")
	}
}

// GRAPH.md 8.5: GET {u} needs User.Read*; Mail.* is not enough.
func TestUserNeedsUserRead(t *testing.T) {
	e := newEnv(t)
	mustError(t, e.do("GET", "/v1.0/users/"+alice, e.app, nil), 403, "Authorization_RequestDenied")
	r := e.do("GET", "/v1.0/me", e.delegatedToken(alice, "User.Read Mail.Read"), nil)
	must(t, r, 200)
	if j := r.json(t); j["id"] != aliceID || j["mail"] != alice {
		t.Errorf("user %v", j)
	}
	r = e.do("GET", "/v1.0/users/"+alice+"/mailFolders", e.app, nil)
	if vs := r.json(t)["value"].([]any); len(vs) != 7 {
		t.Errorf("root children: %d", len(vs))
	}
}

// Folding attachments leaves what was there byte for byte.
func TestWithAttachmentsKeepsBytes(t *testing.T) {
	a := Attachment{Name: "x.bin", Data: []byte{0, 1, 2, 255}}
	multi := "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"q\"\r\n\r\npre\r\n--q\r\nContent-Type: text/plain\r\n\r\nbody\r\n--q--\r\nepi\r\n"
	out := string(withAttachments([]byte(multi), []Attachment{a}))
	head := strings.TrimSuffix(multi, "\r\n--q--\r\nepi\r\n")
	if !strings.HasPrefix(out, head+"\r\n--q\r\n") || !strings.HasSuffix(out, "\r\n--q--\r\nepi\r\n") {
		t.Errorf("multipart:\n%s", out)
	}
	single := "From: a@b.example\nSubject: s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nline 1\nline 2\n"
	out = string(withAttachments([]byte(single), []Attachment{a}))
	if !strings.Contains(out, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nline 1\nline 2\n\n--") ||
		strings.Contains(out, "\r") || !strings.HasPrefix(out, "From: a@b.example\nSubject: s\n") {
		t.Errorf("single part:\n%s", out)
	}
	if got := attachments(t, []byte(out)); !bytes.Equal(got["x.bin"], a.Data) {
		t.Errorf("attachment %v", got)
	}
}
