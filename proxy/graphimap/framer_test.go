package graphimap

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

func TestFramerAnswersMalformedCommandsWithTheirTag(t *testing.T) {
	in := "a1 NOOP\r\n" +
		"a2 FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])\r\n" +
		"a3 FETCH 1:* (BODY[HEADER.FIELDS)\r\n" +
		"a4 NOOP \"open\r\n" +
		"a5 NOOP ) (\r\n" +
		"a6 SELECT {abc}\r\n" +
		"\x01 NOOP\r\n" +
		"a7 APPEND INBOX (\\Seen {3}\r\n" + "a(\"" + " x)\r\n" + // a literal and the line after it pass as they are
		"a8 SELECT \"a (quoted) [name\"\r\n" +
		"DONE\r\n"
	var bad []string
	f := &framer{r: bufio.NewReader(strings.NewReader(in)), bad: func(l string) error { bad = append(bad, l); return nil }}
	passed, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	want := "a1 NOOP\r\na2 FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])\r\na7 APPEND INBOX (\\Seen {3}\r\na(\" x)\r\na8 SELECT \"a (quoted) [name\"\r\nDONE\r\n"
	if string(passed) != want {
		t.Errorf("passed on:\n%q\nwant:\n%q", passed, want)
	}
	for i, prefix := range []string{"a3 BAD a [ is not closed", "a4 BAD a quoted string", "a5 BAD a ) closes no (", "a6 BAD a { that starts no literal", "* BAD the tag"} {
		if i >= len(bad) || !strings.HasPrefix(bad[i], prefix) {
			t.Errorf("answer %d: %q, want %s…", i, bad, prefix)
		}
	}
}

func TestFramerRefusesLiteralsOverTheLimit(t *testing.T) {
	var bad []string
	f := &framer{r: bufio.NewReader(strings.NewReader("a1 APPEND INBOX {999999999}\r\na2 NOOP\r\na3 APPEND INBOX {5+}\r\nhello\r\n")),
		bad: func(l string) error { bad = append(bad, l); return nil }, maxLiteral: 100}
	passed, _ := io.ReadAll(f)
	if string(passed) != "a2 NOOP\r\na3 APPEND INBOX {5+}\r\nhello\r\n" || len(bad) != 1 || !strings.HasPrefix(bad[0], "a1 NO [TOOBIG]") {
		t.Fatalf("passed %q, answered %q", passed, bad)
	}
	f = &framer{r: bufio.NewReader(strings.NewReader("a3 APPEND INBOX {500+}\r\n" + strings.Repeat("x", 500))),
		bad: func(l string) error { bad = append(bad, l); return nil }, maxLiteral: 100}
	if _, err := io.ReadAll(f); err != errLineTooLong || !strings.HasPrefix(bad[1], "* BYE [TOOBIG]") {
		t.Fatalf("%v %q", err, bad)
	}
}

func TestFramerEndsASessionWithAnEndlessLine(t *testing.T) {
	var bad []string
	f := &framer{r: bufio.NewReader(strings.NewReader("a SELECT " + strings.Repeat("x", maxLine) + "\r\n")), bad: func(l string) error { bad = append(bad, l); return nil }}
	if _, err := io.ReadAll(f); err != errLineTooLong || len(bad) != 1 || !strings.HasPrefix(bad[0], "* BAD [TOOBIG]") {
		t.Fatalf("%v %q", err, bad)
	}
}
