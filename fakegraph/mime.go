package fakegraph

// MIME: reading headers and recipients, rewriting headers the way
// Exchange re-renders a message, folding attachments into a
// multipart/mixed, and rendering the JSON message form as MIME.
//
// Headers are kept as raw lines so that a message stored or delivered
// without changes comes back byte for byte.

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"time"
)

type rawHeader struct {
	fields []hfield
	eol    string
}

type hfield struct{ name, raw string }

var headerName = regexp.MustCompile(`^[!-9;-~]+$`)

// splitMessage parses the header block (up to the first empty line) and
// returns the body after it.
func splitMessage(b []byte) (rawHeader, []byte) {
	h := rawHeader{eol: "\r\n"}
	if i := bytes.IndexByte(b, '\n'); i >= 0 && (i == 0 || b[i-1] != '\r') {
		h.eol = "\n"
	}
	rest := b
	for len(rest) > 0 {
		line, next := rest, []byte(nil)
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, next = rest[:i], rest[i+1:]
		}
		l := strings.TrimSuffix(string(line), "\r")
		switch c := strings.IndexByte(l, ':'); {
		case l == "":
			return h, next
		case (l[0] == ' ' || l[0] == '\t') && len(h.fields) > 0:
			h.fields[len(h.fields)-1].raw += h.eol + l
		case c > 0 && headerName.MatchString(strings.TrimRight(l[:c], " \t")):
			h.fields = append(h.fields, hfield{name: strings.TrimRight(l[:c], " \t"), raw: l})
		default:
			return h, rest // no empty line: the body starts here
		}
		rest = next
	}
	return h, nil
}

func (f hfield) value() string {
	v := f.raw[strings.IndexByte(f.raw, ':')+1:]
	v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
	return strings.TrimSpace(v)
}

func (h *rawHeader) get(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			return f.value()
		}
	}
	return ""
}

// getAll joins every occurrence (address headers given twice).
func (h *rawHeader) getAll(name string) string {
	var vs []string
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value())
		}
	}
	return strings.Join(vs, ", ")
}

func (h *rawHeader) has(name string) bool {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	return false
}

func (h *rawHeader) del(name string) {
	out := h.fields[:0]
	for _, f := range h.fields {
		if !strings.EqualFold(f.name, name) {
			out = append(out, f)
		}
	}
	h.fields = out
}

// set replaces the first occurrence of name (dropping the others), or
// adds it at the end.
func (h *rawHeader) set(name, value string) {
	nf := hfield{name: name, raw: name + ": " + value}
	for i, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			h.del(name) // the fields before i stay where they are
			h.fields = insertAt(h.fields, i, nf)
			return
		}
	}
	h.fields = append(h.fields, nf)
}

func insertAt(fs []hfield, i int, f hfield) []hfield {
	if i > len(fs) {
		i = len(fs)
	}
	fs = append(fs, hfield{})
	copy(fs[i+1:], fs[i:])
	fs[i] = f
	return fs
}

func (h *rawHeader) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.WriteString(f.raw)
		b.WriteString(h.eol)
	}
	b.WriteString(h.eol)
	return b.Bytes()
}

func join(h rawHeader, body []byte) []byte { return append(h.bytes(), body...) }

func decodeWords(s string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

func parseDate(s string) (time.Time, error) { return mail.ParseDate(s) }

// parseAddrs reads an address list; it returns what it could read and the
// entries it could not.
func parseAddrs(v string) ([]recipient, []string) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var out []recipient
	var bad []string
	l, err := mail.ParseAddressList(v)
	if err != nil {
		l = nil
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == "" {
				continue
			}
			if a, err := mail.ParseAddress(p); err == nil {
				l = append(l, a)
			} else if !strings.HasSuffix(strings.TrimSpace(p), ":;") {
				bad = append(bad, strings.TrimSpace(p))
			}
		}
	}
	for _, a := range l {
		out = append(out, recipient{Name: a.Name, Address: a.Address})
	}
	return out, bad
}

// formatAddrs renders an address header value, one address per folded
// line.
func formatAddrs(rs []recipient, eol string) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, (&mail.Address{Name: r.Name, Address: r.Address}).String())
	}
	return strings.Join(parts, ","+eol+" ")
}

// decodeMIMEBody reads sendMail's and create's text/plain body: base64 of
// the whole message, line breaks allowed (user-sendmail.md Example 4 wraps
// at 76 columns; GRAPH.md 1.2). Like .NET's Convert.FromBase64String it
// ignores white space and wants the padding.
func decodeMIMEBody(b []byte) ([]byte, error) {
	clean := bytes.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, b)
	return base64.StdEncoding.DecodeString(string(clean))
}

// wrap76 is base64 in 76-column lines (RFC 2045 §6.8).
func wrap76(data []byte, eol string) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString(eol)
		enc = enc[76:]
	}
	b.WriteString(enc)
	return b.String()
}

// render is m as GET …/$value returns it and as it is sent: its MIME with
// the attachments added through Graph folded in; withBcc false drops the
// Bcc header, as Exchange does for the copies recipients get (GRAPH.md 1.4).
func (m *message) render(withBcc bool) []byte {
	out := m.mime
	if !withBcc {
		h, body := splitMessage(out)
		if h.has("Bcc") {
			h.del("Bcc")
			out = join(h, body)
		}
	}
	if len(m.attachments) > 0 {
		var as []Attachment
		for _, a := range m.attachments {
			as = append(as, a.Attachment)
		}
		out = withAttachments(out, as)
	}
	return out
}

// withAttachments adds each attachment as a base64 part of a top-level
// multipart/mixed, wrapping a single-part message in one when needed, so
// recipients get every attachment's bytes intact.
func withAttachments(msg []byte, atts []Attachment) []byte {
	h, body := splitMessage(msg)
	eol := h.eol
	var parts [][]byte
	for _, a := range atts {
		parts = append(parts, attachmentPart(a, eol))
	}
	mt, params, _ := mime.ParseMediaType(h.get("Content-Type"))
	if mt == "multipart/mixed" && params["boundary"] != "" {
		if mp, ok := splitMultipart(body, params["boundary"]); ok {
			mp.parts = append(mp.parts, parts...)
			return join(h, mp.join(eol))
		}
	}
	// Wrap: the Content-* headers go with the old body into the first part.
	var inner, outer rawHeader
	inner.eol, outer.eol = eol, eol
	for _, f := range h.fields {
		if strings.HasPrefix(strings.ToLower(f.name), "content-") {
			inner.fields = append(inner.fields, f)
		} else {
			outer.fields = append(outer.fields, f)
		}
	}
	boundary := "_fakegraph_" + randomHex(12) + "_"
	outer.set("MIME-Version", "1.0")
	outer.set("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": boundary}))
	mp := multipartBody{boundary: boundary, parts: append([][]byte{join(inner, body)}, parts...), epilogue: []byte(eol)}
	return join(outer, mp.join(eol))
}

func attachmentPart(a Attachment, eol string) []byte {
	ct := a.ContentType
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || ct == "" {
		mt, params = "application/octet-stream", map[string]string{}
	}
	if a.Name != "" {
		params["name"] = a.Name
	}
	h := rawHeader{eol: eol}
	h.set("Content-Type", mime.FormatMediaType(mt, params))
	if a.Name != "" {
		h.set("Content-Description", mime.QEncoding.Encode("utf-8", a.Name))
	}
	disp := "attachment"
	if a.IsInline {
		disp = "inline"
	}
	dp := map[string]string{}
	if a.Name != "" {
		dp["filename"] = a.Name
	}
	h.set("Content-Disposition", mime.FormatMediaType(disp, dp))
	if a.ContentID != "" {
		h.set("Content-ID", "<"+strings.Trim(a.ContentID, "<>")+">")
	}
	h.set("Content-Transfer-Encoding", "base64")
	return join(h, []byte(wrap76(a.Data, eol)))
}

// multipartBody is a multipart body split at its delimiter lines; each
// part is its raw headers and body (RFC 2046 §5.1.1: the line break before
// a delimiter belongs to the delimiter).
type multipartBody struct {
	boundary string
	preamble []byte // up to the first delimiter line
	parts    [][]byte
	epilogue []byte // after the close delimiter line, its line break included
}

func splitMultipart(body []byte, boundary string) (multipartBody, bool) {
	mp := multipartBody{boundary: boundary}
	open, closing := "--"+boundary, "--"+boundary+"--"
	start := -1 // where the current part's content starts
	for i := 0; i < len(body); {
		j := bytes.IndexByte(body[i:], '\n')
		end := len(body)
		if j >= 0 {
			end = i + j
		}
		line := strings.TrimRight(string(body[i:end]), " \t\r")
		next := end + 1
		if line == open || line == closing {
			if start < 0 {
				mp.preamble = body[:i]
			} else {
				cut := i
				if cut > start && body[cut-1] == '\n' {
					cut--
					if cut > start && body[cut-1] == '\r' {
						cut--
					}
				}
				mp.parts = append(mp.parts, body[start:max(cut, start)])
			}
			if line == closing {
				mp.epilogue = body[i+len(closing):] // padding and line break kept
				return mp, true
			}
			start = min(next, len(body))
		}
		i = next
	}
	return mp, false
}

func (mp multipartBody) join(eol string) []byte {
	var b bytes.Buffer
	b.Write(mp.preamble)
	for _, p := range mp.parts {
		b.WriteString("--" + mp.boundary + eol)
		b.Write(p)
		b.WriteString(eol)
	}
	b.WriteString("--" + mp.boundary + "--")
	b.Write(mp.epilogue)
	return b.Bytes()
}

// textPart renders a body as a quoted-printable UTF-8 part.
func textPart(contentType, content, eol string) (rawHeader, []byte) {
	h := rawHeader{eol: eol}
	ct := "text/plain"
	if strings.EqualFold(contentType, "html") {
		ct = "text/html"
	}
	h.set("Content-Type", ct+`; charset="utf-8"`)
	h.set("Content-Transfer-Encoding", "quoted-printable")
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(content))
	w.Close()
	return h, bytes.ReplaceAll(b.Bytes(), []byte("\r\n"), []byte(eol))
}

// replaceBody gives a draft a new body (PATCH body): the first part of a
// multipart/mixed, or the whole single-part body.
func replaceBody(msg []byte, contentType, content string) []byte {
	h, body := splitMessage(msg)
	ph, pb := textPart(contentType, content, h.eol)
	mt, params, _ := mime.ParseMediaType(h.get("Content-Type"))
	if mt == "multipart/mixed" && params["boundary"] != "" {
		if mp, ok := splitMultipart(body, params["boundary"]); ok && len(mp.parts) > 0 {
			mp.parts[0] = join(ph, pb)
			return join(h, mp.join(h.eol))
		}
	}
	for _, n := range []string{"Content-Type", "Content-Transfer-Encoding", "Content-Disposition"} {
		h.del(n)
	}
	h.set("MIME-Version", "1.0")
	for _, f := range ph.fields {
		h.fields = append(h.fields, f)
	}
	return join(h, pb)
}

// textBody is the message's body for the JSON body property: the HTML
// part if there is one, else the plain text one ("html" or "text").
func textBody(msg []byte) (string, string) {
	h, body := splitMessage(msg)
	var html, plain *string
	walkText(h, body, 0, func(mt, text string) {
		if mt == "text/html" && html == nil {
			html = &text
		} else if mt == "text/plain" && plain == nil {
			plain = &text
		}
	})
	switch {
	case html != nil:
		return "html", *html
	case plain != nil:
		return "text", *plain
	}
	return "text", ""
}

// walkText calls fn with the decoded text of every text/plain and
// text/html part that is not an attachment.
func walkText(h rawHeader, body []byte, depth int, fn func(mt, text string)) {
	mt, params, err := mime.ParseMediaType(h.get("Content-Type"))
	if err != nil || h.get("Content-Type") == "" {
		mt, params = "text/plain", map[string]string{}
	}
	if d, _, _ := mime.ParseMediaType(h.get("Content-Disposition")); d == "attachment" {
		return
	}
	if strings.HasPrefix(mt, "multipart/") && depth < 10 {
		mp, _ := splitMultipart(body, params["boundary"])
		for _, p := range mp.parts {
			ph, pb := splitMessage(p)
			walkText(ph, pb, depth+1, fn)
		}
		return
	}
	if mt != "text/html" && mt != "text/plain" {
		return
	}
	text := decodeCTE(h.get("Content-Transfer-Encoding"), body)
	if cs := strings.ToLower(params["charset"]); cs == "iso-8859-1" || cs == "latin1" || cs == "windows-1252" {
		rs := make([]rune, len(text))
		for i, c := range text {
			rs[i] = rune(c)
		}
		text = []byte(string(rs))
	}
	fn(mt, string(text))
}

func decodeCTE(cte string, body []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		if d, err := decodeMIMEBody(body); err == nil {
			return d
		}
	case "quoted-printable":
		if d, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body))); err == nil {
			return d
		}
	}
	return body
}

var tags = regexp.MustCompile(`(?s)<style.*?</style>|<[^>]*>`)

// htmlText is the text of an HTML body: tags dropped, common entities
// decoded.
func htmlText(content string) string {
	content = tags.ReplaceAllString(content, " ")
	return strings.NewReplacer("&nbsp;", " ", "&amp;", "&", "&lt;", "<", "&gt;", ">", "&quot;", `"`).Replace(content)
}

// preview is bodyPreview: the first 255 characters of the text, white
// space collapsed (message resource: "The first 255 characters").
func preview(contentType, content string) string {
	if contentType == "html" {
		content = htmlText(content)
	}
	r := []rune(strings.Join(strings.Fields(content), " "))
	if len(r) > 255 {
		r = r[:255]
	}
	return string(r)
}

// stamp adds what Exchange supplies when a submitted message lacks it:
// From (the mailbox), Date and Message-ID (RFC 5322 §3.6 requires the
// first two; [Rec] Exchange stamps all three on submission).
func stamp(msg []byte, mailbox string, now time.Time) []byte {
	h, body := splitMessage(msg)
	changed := false
	if !h.has("From") {
		h.set("From", mailbox)
		changed = true
	}
	if !h.has("Date") {
		h.set("Date", now.Format(time.RFC1123Z))
		changed = true
	}
	if !h.has("Message-ID") {
		h.set("Message-ID", newMessageID())
		changed = true
	}
	if !changed {
		return msg
	}
	return join(h, body)
}

func newMessageID() string { return "<" + randomHex(16) + "@fakegraph.invalid>" }

// jsonMIME renders the JSON message form (user-sendmail.md, JSON request
// body; user-post-messages.md) as a simple MIME message, as Exchange does
// when it sends one.
func jsonMIME(in *msgInput, from recipient, now time.Time) []byte {
	eol := "\r\n"
	h := rawHeader{eol: eol}
	h.set("From", formatAddrs([]recipient{from}, eol))
	for _, x := range []struct {
		name string
		rs   *[]recipientJSON
	}{{"To", in.ToRecipients}, {"Cc", in.CcRecipients}, {"Bcc", in.BccRecipients}, {"Reply-To", in.ReplyTo}} {
		if rs := fromJSONRecipients(x.rs); len(rs) > 0 {
			h.set(x.name, formatAddrs(rs, eol))
		}
	}
	if in.Subject != nil {
		h.set("Subject", mimeWord(*in.Subject))
	}
	h.set("Date", now.Format(time.RFC1123Z))
	if in.InternetMessageID != nil && *in.InternetMessageID != "" {
		h.set("Message-ID", *in.InternetMessageID)
	} else {
		h.set("Message-ID", newMessageID())
	}
	if in.Importance != nil && !strings.EqualFold(*in.Importance, "normal") {
		h.set("Importance", strings.ToLower(*in.Importance))
	}
	h.set("MIME-Version", "1.0")
	ct, content := "text", ""
	if in.Body != nil {
		ct, content = in.Body.ContentType, in.Body.Content
	}
	ph, pb := textPart(ct, content, eol)
	h.fields = append(h.fields, ph.fields...)
	return join(h, pb)
}

// mimeWord encodes a header text as RFC 2047 words when it is not ASCII.
func mimeWord(s string) string { return mime.QEncoding.Encode("utf-8", s) }
