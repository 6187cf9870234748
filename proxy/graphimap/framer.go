package graphimap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// maxLine bounds a command line, literals apart (Dovecot's
// imap_max_line_length default).
const maxLine = 64 << 10

// errLineTooLong ends a session whose client sent a line over maxLine.
var errLineTooLong = errors.New("command line too long")

// framer stands between the client and go-imap v1's reader, which answers
// some malformed commands with untagged BADs only, so that the client
// waits for a tagged answer forever, and reads lines of any length. A
// command on one line whose quotes, parentheses or brackets do not match,
// or whose tag is not an atom, is answered "tag BAD" here and not passed
// on; a line over maxLine is answered BAD and ends the session. Literals
// and the lines around them pass as they are.
type framer struct {
	r   *bufio.Reader
	bad func(line string) error // writes a response line to the client
	// maxLiteral bounds a literal: a larger one is refused before the
	// client sends it ({N}); one sent unasked ({N+}) ends the session.
	maxLiteral int64
	out        []byte // bytes ready for go-imap
	lit        int64  // literal bytes still to pass on
	inCmd      bool   // the next line continues a command after a literal
}

var literalEnd = regexp.MustCompile(`\{(\d+)\+?\}\r?\n$`)

func (f *framer) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.lit > 0 {
			n := int64(len(p))
			if n > f.lit {
				n = f.lit
			}
			m, err := f.r.Read(p[:n])
			f.lit -= int64(m)
			return m, err
		}
		line, err := f.line()
		if err != nil {
			return 0, err
		}
		if m := literalEnd.FindSubmatch(line); m != nil {
			n, err := strconv.ParseInt(string(m[1]), 10, 64)
			if err != nil || f.maxLiteral > 0 && n > f.maxLiteral {
				if bytes.HasSuffix(bytes.TrimRight(line, "\r\n"), []byte("+}")) {
					f.bad(fmt.Sprintf("* BYE [TOOBIG] a literal over %d octets: closing", f.maxLiteral))
					return 0, errLineTooLong
				}
				// The client waits for "+" before it sends the literal,
				// and gets this answer instead.
				if err := f.bad(fmt.Sprintf("%s NO [TOOBIG] a literal over %d octets", tagOf(line), f.maxLiteral)); err != nil {
					return 0, err
				}
				f.inCmd = false
				continue
			}
			f.lit, f.inCmd, f.out = n, true, line
			break
		}
		continued := f.inCmd
		f.inCmd = false
		if !continued {
			if why := malformed(line); why != "" {
				if err := f.bad(fmt.Sprintf("%s BAD %s", tagOf(line), why)); err != nil {
					return 0, err
				}
				continue
			}
		}
		f.out = line
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// line reads a line up to maxLine.
func (f *framer) line() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := f.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxLine {
			f.bad(fmt.Sprintf("* BAD [TOOBIG] command line over %d KiB: closing", maxLine>>10))
			return nil, errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && len(buf) > 0 && err == io.EOF {
			return buf, nil
		}
		return buf, err
	}
}

var tagAtom = regexp.MustCompile(`^[!#$&'+,\-./0-9:;<=>?@A-Z^_` + "`" + `a-z|}~]+$`)

// tagOf is a line's tag when it is one, else "*".
func tagOf(line []byte) string {
	tag, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" "))
	if tagAtom.Match(tag) && !bytes.ContainsRune(tag, '+') {
		return string(tag)
	}
	return "*"
}

// malformed says what is wrong with a command on one line, or "" (IDLE's
// DONE, SASL responses and empty lines pass: go-imap knows them).
func malformed(line []byte) string {
	l := bytes.TrimRight(line, "\r\n")
	tag, rest, hasCmd := bytes.Cut(l, []byte(" "))
	if !hasCmd {
		return ""
	}
	if tagOf(l) == "*" {
		return fmt.Sprintf("the tag %q is not an IMAP atom", truncate(string(tag)))
	}
	paren, bracket := 0, 0
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case '"':
			for i++; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' {
					i++
				}
			}
			if i >= len(rest) {
				return "a quoted string does not end"
			}
		case '(':
			paren++
		case ')':
			if paren--; paren < 0 {
				return "a ) closes no ("
			}
		case '{':
			// Not an atom character (RFC 3501 §9): only a literal, which
			// ends its line, may have one.
			return "a { that starts no literal (a literal is {N} at the end of its line)"
		case '[':
			bracket++
		case ']':
			if bracket--; bracket < 0 {
				return "a ] closes no ["
			}
		}
	}
	switch {
	case paren > 0:
		return "a ( is not closed"
	case bracket > 0:
		return "a [ is not closed"
	}
	return ""
}

// truncate keeps what a client sent short in an answer.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
