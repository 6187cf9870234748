package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Bounds on what a client may send before it has logged in: enough for
// any user name, password or SASL PLAIN response, small enough that a
// storm of bad clients costs little memory.
const (
	maxPreauthLine    = 8 << 10
	maxPreauthLiteral = 4 << 10
	maxPreauthCommand = 16 << 10
)

// imapCommand is one command before login (RFC 3501 §9): a tag, a name and
// its arguments, with quoted strings and literals decoded. A parenthesised
// list's brackets are arguments of their own ("(" and ")").
type imapCommand struct {
	tag  string
	name string // upper case
	args []string
}

// errFatal is a client error after which the stream cannot be trusted
// (an endless line, an oversized non-synchronising literal): the session
// says BYE and closes.
type errFatal struct{ msg string }

func (e *errFatal) Error() string { return e.msg }

// errBad is a malformed command: the client gets a tagged BAD and may go on.
type errBad struct {
	tag string
	msg string
}

func (e *errBad) Error() string { return e.msg }

// imapReader reads commands. ready is called when a synchronising literal
// may be sent (the server's "+" continuation).
type imapReader struct {
	r     *bufio.Reader
	ready func() error
}

// readBoundedLine reads one line without CRLF, at most max octets.
func readBoundedLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+2 {
			return nil, &errFatal{"line too long"}
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// read returns the next command. Errors are *errBad (answer BAD, go on),
// *errFatal (BYE, close) or the connection's.
func (ir *imapReader) read() (*imapCommand, error) {
	line, err := readBoundedLine(ir.r, maxPreauthLine)
	if err != nil {
		return nil, err
	}
	cmd := &imapCommand{}
	total := len(line)
	p := line
	for {
		p = bytes.TrimLeft(p, " ")
		if len(p) == 0 {
			break
		}
		var tok string
		switch p[0] {
		case '"':
			tok, p, err = quoted(p)
			if err != nil {
				return nil, &errBad{cmd.tag, err.Error()}
			}
		case '(', ')':
			tok, p = string(p[:1]), p[1:]
		case '{':
			n, sync, ok := literalSpec(p)
			if !ok {
				return nil, &errBad{cmd.tag, "malformed literal: {N} or {N+} at the end of a line"}
			}
			if n > maxPreauthLiteral || total+n > maxPreauthCommand {
				if sync {
					return nil, &errBad{cmd.tag, fmt.Sprintf("literal too large: at most %d octets before login", maxPreauthLiteral)}
				}
				return nil, &errFatal{"non-synchronising literal too large"}
			}
			if sync {
				if err := ir.ready(); err != nil {
					return nil, err
				}
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(ir.r, b); err != nil {
				return nil, err
			}
			tok = string(b)
			// The command goes on after the literal, on the next line.
			if p, err = readBoundedLine(ir.r, maxPreauthLine); err != nil {
				return nil, err
			}
			total += n + len(p)
			if total > maxPreauthCommand {
				return nil, &errFatal{"command too long"}
			}
		default:
			end := bytes.IndexAny(p, " ()\"")
			if end < 0 {
				end = len(p)
			}
			if end == 0 { // a stray quote or bracket inside an atom
				end = 1
			}
			tok, p = string(p[:end]), p[end:]
		}
		switch {
		case cmd.tag == "":
			cmd.tag = tok
		case cmd.name == "":
			cmd.name = strings.ToUpper(tok)
		default:
			cmd.args = append(cmd.args, tok)
		}
	}
	if !validTag(cmd.tag) {
		return nil, &errBad{"*", "expected: tag command [arguments]"}
	}
	if cmd.name == "" {
		return nil, &errBad{cmd.tag, "expected a command after the tag"}
	}
	return cmd, nil
}

// validTag reports whether tag is 1*<ASTRING-CHAR except "+"> (RFC 3501
// §9): printable ASCII without atom-specials. Anything else is never
// echoed back.
func validTag(tag string) bool {
	if tag == "" {
		return false
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`+(){%*"\`, c) >= 0 {
			return false
		}
	}
	return true
}

// quoted decodes a quoted string at the start of p (RFC 3501: only \" and
// \\ are escapes).
func quoted(p []byte) (string, []byte, error) {
	var b strings.Builder
	for i := 1; i < len(p); i++ {
		switch c := p[i]; c {
		case '"':
			return b.String(), p[i+1:], nil
		case '\\':
			i++
			if i == len(p) || p[i] != '"' && p[i] != '\\' {
				return "", nil, errors.New(`bad escape in quoted string: only \" and \\`)
			}
			b.WriteByte(p[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", nil, errors.New("unterminated quoted string")
}

// literalSpec parses "{N}" or "{N+}" that ends p. N beyond 32 bits (RFC
// 3501's number) is reported as 1<<32, which every bound refuses.
func literalSpec(p []byte) (n int, sync, ok bool) {
	if bytes.IndexByte(p, '}') != len(p)-1 {
		return 0, false, false
	}
	spec := string(p[1 : len(p)-1])
	sync = true
	if s, plus := strings.CutSuffix(spec, "+"); plus {
		spec, sync = s, false
	}
	if spec == "" || strings.Trim(spec, "0123456789") != "" {
		return 0, false, false
	}
	v, err := strconv.ParseUint(spec, 10, 64)
	if err != nil || v > 1<<32 {
		v = 1 << 32
	}
	return int(v), sync, true
}
