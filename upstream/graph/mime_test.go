package graph

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

func spoolOf(t *testing.T, s string) *spool {
	sp, err := newSpool(strings.NewReader(s), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func readAll(t *testing.T, b Body) string {
	r, err := b.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, _ := io.ReadAll(r)
	return string(data)
}

func TestHeaderAddressesAndBcc(t *testing.T) {
	msg := "From: App <app@x>\r\nTo: A <A@x>,\r\n\tb@x\r\nCc: undisclosed-recipients:;\r\nBcc: old@x\r\nSubject: hi\r\n\r\nbody\r\n"
	sp := spoolOf(t, msg)
	h, err := readHeader(sp, 0, sp.Size())
	if err != nil {
		t.Fatal(err)
	}
	to, ok := h.addresses("to")
	if !ok || strings.Join(to, ",") != "a@x,b@x" {
		t.Fatalf("To %v %v", to, ok)
	}
	if cc, ok := h.addresses("cc"); !ok || len(cc) != 0 {
		t.Fatalf("Cc %v %v", cc, ok)
	}
	got := readAll(t, withBcc(sp, h, []string{"old@x", "env@x"}))
	want := "From: App <app@x>\r\nTo: A <A@x>,\r\n\tb@x\r\nCc: undisclosed-recipients:;\r\nSubject: hi\r\nBcc: old@x,\r\n env@x\r\n\r\nbody\r\n"
	if got != want {
		t.Fatalf("with Bcc:\n%q\nwant\n%q", got, want)
	}
}

func TestSplitTakesLargeAttachmentsOutAndKeepsTheRest(t *testing.T) {
	big := bytes.Repeat([]byte{0, 1, 2, 250, 251, 252, 'x'}, 1<<20) // 7 MB
	b64 := base64.StdEncoding.EncodeToString(big)
	var lines []string
	for i := 0; i < len(b64); i += 76 {
		lines = append(lines, b64[i:min(i+76, len(b64))])
	}
	msg := "From: a@x\r\nTo: b@x\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B1\"\r\n\r\n" +
		"preamble\r\n--B1\r\nContent-Type: multipart/alternative; boundary=B2\r\n\r\n--B2\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B2\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--B2--\r\n" +
		"\r\n--B1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename*=UTF-8''d%C3%A4ta.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		strings.Join(lines, "\r\n") + "\r\n--B1\r\nContent-Type: text/plain; name=small.txt\r\nContent-Disposition: attachment; filename=small.txt\r\n\r\nsmall\r\n--B1--\r\nepilogue\r\n"
	sp := spoolOf(t, msg)
	root, err := parseParts(sp, 0, sp.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var whole bytes.Buffer
	if err := root.render(&whole, sp, nil); err != nil || whole.String() != msg {
		t.Fatalf("render without skips changed the message (%v)", err)
	}
	rest, atts, cleanup, err := split(sp)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if len(atts) != 1 || atts[0].Name != "däta.bin" || atts[0].ContentType != "application/octet-stream" {
		t.Fatalf("attachments %+v", atts)
	}
	if got := readAll(t, atts[0].Data); got != string(big) {
		t.Fatalf("attachment bytes differ (%d vs %d)", len(got), len(big))
	}
	r := readAll(t, rest)
	if strings.Contains(r, "data.bin") || !strings.Contains(r, "<p>hello</p>") || !strings.Contains(r, "filename=small.txt") || !strings.HasSuffix(r, "--B1--\r\nepilogue\r\n") {
		t.Fatalf("what stays:\n%s", r)
	}
}
