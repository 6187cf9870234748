package fakegraph

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"
)

func TestParseSearch(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: the terms, or the error code
	}{
		{`"pizza"`, `[{ [pizza]}]`},
		{`pizza`, `[{ [pizza]}]`},
		{`"body:excitement"`, `[{body [excitement]}]`},
		{`"subject:\"two words\""`, `[{subject [two words]}]`},
		{`"subject:\"Two Words\" AND from:randiw@contoso.com"`, `[{subject [two words]} {from [randiw contoso com]}]`},
		{`"participants:danas Pizza"`, `[{participants [danas]} { [pizza]}]`},
		{`"\"a phrase\""`, `[{ [a phrase]}]`},
		{`"a OR b"`, "NotImplemented"},
		{`"received:07/23/2018"`, "NotImplemented"},
		{`"nosuch:x"`, "BadRequest"},
		{`""`, "BadRequest"},
		{`"AND"`, "BadRequest"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			terms, e := parseSearch(tc.in)
			got := fmt.Sprint(terms)
			if e != nil {
				got = e.code
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// concepts/search-query-parameter.md: KQL terms on from, subject, body
// (the default), to, participants…; words and word starts, not substrings.
func TestSearchMessages(t *testing.T) {
	e := newEnv(t)
	sent := time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC)
	put := func(name string, body string, headers ...string) {
		sent = sent.Add(time.Hour)
		headers = append(headers, "Subject: "+name, "Date: "+sent.Format(time.RFC1123Z))
		e.g.Put(alice, "inbox", msg(body, headers...))
	}
	put("plain", "Such excitement about the pizza.\r\n", "From: Randi Welch <randiw@contoso.com>", "To: "+alice)
	put("quoted-printable", "caf=C3=A9 au lait, excite=\r\nment\r\n", "From: x@fabrikam.example", "To: Dana Swope <danas@contoso.com>",
		"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable")
	put("base64", base64.StdEncoding.EncodeToString([]byte("a hidden treasure"))+"\r\n", "From: x@fabrikam.example", "To: "+alice,
		"Content-Type: text/plain", "Content-Transfer-Encoding: base64")
	put("html", "<p>Lunch &amp; <b>pizza</b>!</p>\r\n", "From: x@fabrikam.example", "To: "+alice, "Cc: carol@fabrikam.example",
		"Content-Type: text/html")
	put("two words here", "nothing\r\n", "From: pizza@fabrikam.example", "To: "+alice)
	put("attachment", "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nsecretword\r\n--b--\r\n",
		"From: x@fabrikam.example", "To: "+alice, `Content-Type: multipart/mixed; boundary="b"`)

	for _, tc := range []struct {
		search string
		want   string // subjects, newest sent first
	}{
		{`"pizza"`, "[two words here html plain]"}, // from, body and body
		{`"body:pizza"`, "[html plain]"},
		{`"body:excitement"`, "[quoted-printable plain]"},
		{`"excit"`, "[quoted-printable plain]"},
		{`"citem"`, "[]"},
		{`"café"`, "[quoted-printable]"},
		{`"body:treasure"`, "[base64]"},
		{`"subject:\"two words\""`, "[two words here]"},
		{`"subject:\"words two\""`, "[]"},
		{`"from:randiw"`, "[plain]"},
		{`"from:\"Randi Welch\""`, "[plain]"},
		{`"from:randiw@contoso.com"`, "[plain]"},
		{`"to:danas"`, "[quoted-printable]"},
		{`"cc:carol"`, "[html]"},
		{`"recipients:carol"`, "[html]"},
		{`"participants:randiw"`, "[plain]"},
		{`"participants:carol"`, "[html]"},
		{`"pizza AND body:excitement"`, "[plain]"},
		{`"pizza lunch"`, "[html]"},
		{`"secretword"`, "[]"}, // attachments are not body
		{`"attached"`, "[attachment]"},
	} {
		t.Run(tc.search, func(t *testing.T) {
			for _, path := range []string{"/mailFolders/inbox/messages", "/messages"} {
				r := e.do("GET", "/v1.0/users/"+alice+path+"?$select=subject&$search="+url.QueryEscape(tc.search), e.app, nil)
				must(t, r, 200)
				var got []string
				for _, v := range r.json(t)["value"].([]any) {
					got = append(got, v.(map[string]any)["subject"].(string))
				}
				if fmt.Sprint(got) != tc.want && !(got == nil && tc.want == "[]") {
					t.Errorf("%s: %v, want %s", path, got, tc.want)
				}
			}
		})
	}

	u := "/v1.0/users/" + alice + "/mailFolders/inbox/messages?$search=" + url.QueryEscape(`"pizza"`)
	mustError(t, e.do("GET", u+"&$filter="+url.QueryEscape("isRead eq false"), e.app, nil), 400, "SearchWithFilter")
	mustError(t, e.do("GET", u+"&$orderby=receivedDateTime", e.app, nil), 400, "SearchWithOrderBy")
	mustError(t, e.do("GET", "/v1.0/users/"+alice+"/messages?$search="+url.QueryEscape(`"a OR b"`), e.app, nil), 501, "NotImplemented")
	mustError(t, e.do("GET", "/v1.0/users/"+alice+"/messages?$filter="+url.QueryEscape("isRead eq false"), e.app, nil), 501, "NotImplemented")
}

// "A $search request returns up to 1000 results", paged like listings.
func TestSearchCapsAt1000(t *testing.T) {
	e := newEnv(t)
	var all []string
	for i := range 1005 {
		all = append(all, e.g.Put(alice, "inbox", msg("common\r\n", "From: x@fabrikam.example", "To: "+alice, fmt.Sprintf("Subject: s%04d", i))))
	}
	next := "/v1.0/users/" + alice + "/mailFolders/inbox/messages?$select=id&$top=400&$search=" + url.QueryEscape(`"common"`)
	var pages []int
	var got []string
	for next != "" {
		r := e.do("GET", next, e.app, nil, "Prefer", imm)
		must(t, r, 200)
		j := r.json(t)
		vs := j["value"].([]any)
		pages = append(pages, len(vs))
		for _, v := range vs {
			got = append(got, v.(map[string]any)["id"].(string))
		}
		next, _ = j["@odata.nextLink"].(string)
	}
	// Newest sent first: without a Date header, sent is when stored.
	slices.Reverse(all)
	if fmt.Sprint(pages) != "[400 400 200]" || !slices.Equal(got, all[:1000]) {
		t.Errorf("pages %v, first %v…", pages, got[:3])
	}
}
