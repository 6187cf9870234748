package graph

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"strings"
)

// spool holds one message while it is sent: in memory up to memoryLimit,
// then in a temporary file, so memory per message stays bounded.
type spool struct {
	mem  []byte
	file *os.File
	size int64
}

const memoryLimit = 1 << 20

// ErrTooLarge: a message is over the size the profile takes.
var ErrTooLarge = errors.New("message too large")

// newSpool reads r (at most limit octets) into a spool.
func newSpool(r io.Reader, limit int64) (*spool, error) {
	s := &spool{}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if err := s.write(buf[:n]); err != nil {
				s.Close()
				return nil, err
			}
			if s.size > limit {
				s.Close()
				return nil, ErrTooLarge
			}
		}
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			s.Close()
			return nil, err
		}
	}
}

func (s *spool) write(p []byte) error {
	s.size += int64(len(p))
	if s.file == nil && len(s.mem)+len(p) <= memoryLimit {
		s.mem = append(s.mem, p...)
		return nil
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "mailproxy-message-*")
		if err != nil {
			return fmt.Errorf("spooling the message: %w", err)
		}
		os.Remove(f.Name()) // gone when closed, whatever happens
		if _, err := f.Write(s.mem); err != nil {
			f.Close()
			return fmt.Errorf("spooling the message: %w", err)
		}
		s.file, s.mem = f, nil
	}
	if _, err := s.file.Write(p); err != nil {
		return fmt.Errorf("spooling the message: %w", err)
	}
	return nil
}

func (s *spool) Size() int64 { return s.size }

// Open implements Body.
func (s *spool) Open() (io.ReadCloser, error) { return io.NopCloser(s.section(0, s.size)), nil }

// section reads octets [start, end).
func (s *spool) section(start, end int64) io.Reader {
	if s.file == nil {
		return bytes.NewReader(s.mem[start:end])
	}
	return io.NewSectionReader(s.file, start, end-start)
}

func (s *spool) ReadAt(p []byte, off int64) (int, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem).ReadAt(p, off)
	}
	return s.file.ReadAt(p, off)
}

// Close frees the spool.
func (s *spool) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	s.mem = nil
	return nil
}

// field is one header field as written: its name and raw lines.
type field struct {
	name string // canonical, e.g. "Bcc"
	raw  []byte // "Name: value\r\n" with its folded lines
}

// header is a message's (or part's) header as written.
type header struct {
	fields []field
	end    int64 // offset just past the blank line that ends it
}

// readHeader reads the header at the start of r (octets [from, to)).
func readHeader(r io.ReaderAt, from, to int64) (header, error) {
	br := bufio.NewReader(io.NewSectionReader(r, from, to-from))
	h := header{end: from}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return h, errors.New("a header line longer than 4 KB")
		}
		h.end += int64(len(line))
		if len(line) == 0 || (err != nil && len(bytes.TrimRight(line, "\r\n")) == 0) {
			return h, nil // no body
		}
		if t := bytes.TrimRight(line, "\r\n"); len(t) == 0 {
			return h, nil
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0 {
			f := &h.fields[len(h.fields)-1]
			f.raw = append(f.raw, line...)
		} else if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			h.fields = append(h.fields, field{name: canonical(string(name)), raw: bytes.Clone(line)})
		}
		if err != nil {
			return h, nil
		}
	}
}

// unfold joins a field's folded lines (RFC 5322 §2.2.3).
func unfold(v string) string { return strings.NewReplacer("\r\n", "", "\n", "").Replace(v) }

func canonical(name string) string {
	return strings.ToLower(strings.TrimSpace(name))
}

// get is the unfolded value of the first field called name.
func (h header) get(name string) string {
	for _, f := range h.fields {
		if f.name == name {
			_, v, _ := bytes.Cut(f.raw, []byte(":"))
			return strings.TrimSpace(unfold(string(v)))
		}
	}
	return ""
}

// addresses are the addresses of every field called name, lower case; ok
// is false if one does not parse.
func (h header) addresses(name string) (out []string, ok bool) {
	ok = true
	for _, f := range h.fields {
		if f.name != name {
			continue
		}
		_, v, _ := bytes.Cut(f.raw, []byte(":"))
		value := strings.TrimSpace(unfold(string(v)))
		if value == "" || strings.HasSuffix(value, ":;") { // "undisclosed-recipients:;"
			continue
		}
		list, err := mail.ParseAddressList(value)
		if err != nil {
			ok = false
			continue
		}
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
	}
	return out, ok
}

// withBcc is the message with its Bcc fields replaced by one naming bcc:
// Exchange delivers to a Bcc header and strips it from what recipients
// get (GRAPH.md 1.4).
func withBcc(s *spool, h header, bcc []string) Body {
	var head bytes.Buffer
	for _, f := range h.fields {
		if f.name != "bcc" {
			head.Write(f.raw)
		}
	}
	if len(bcc) > 0 {
		head.WriteString("Bcc: " + strings.Join(bcc, ",\r\n ") + "\r\n")
	}
	head.WriteString("\r\n")
	return &joined{head: head.Bytes(), s: s, from: h.end}
}

// joined is a new header followed by a spool's body.
type joined struct {
	head []byte
	s    *spool
	from int64
}

func (j *joined) Size() int64 { return int64(len(j.head)) + j.s.size - j.from }
func (j *joined) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(j.head), j.s.section(j.from, j.s.size))), nil
}

// part is a MIME entity of the message: its header and body's octets.
type part struct {
	h                  header
	start, body, end   int64 // entity start, body start, end (exclusive)
	children           []*part
	boundary           string
	preamble, epilogue [2]int64 // multipart only: ranges around the parts
}

func (p *part) mediaType() (string, map[string]string) {
	mt, params, err := mime.ParseMediaType(p.h.get("content-type"))
	if err != nil {
		return "text/plain", nil
	}
	return mt, params
}

// parseParts reads the MIME tree of octets [start, end) of r, to depth.
func parseParts(r io.ReaderAt, start, end int64, depth int) (*part, error) {
	h, err := readHeader(r, start, end)
	if err != nil {
		return nil, err
	}
	p := &part{h: h, start: start, body: h.end, end: end}
	mt, params := p.mediaType()
	if !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" || depth > 8 {
		return p, nil
	}
	p.boundary = params["boundary"]
	delim := []byte("--" + p.boundary)
	br := bufio.NewReaderSize(io.NewSectionReader(r, p.body, end-p.body), 64<<10)
	off := p.body
	var starts []int64 // starts of each part's entity
	var ends []int64   // where each part ends (before the CRLF of the next delimiter)
	closed := false
	for !closed {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) { // a long line is no delimiter
			off += int64(len(line))
			line, err = br.ReadSlice('\n')
		}
		lineStart := off
		off += int64(len(line))
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.HasPrefix(t, delim) {
			rest := t[len(delim):]
			isClose := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || isClose {
				if len(starts) > len(ends) {
					ends = append(ends, lineBreakBefore(r, lineStart, starts[len(starts)-1]))
				} else {
					p.preamble = [2]int64{p.body, lineStart}
				}
				if isClose {
					closed = true
					p.epilogue = [2]int64{off, end}
				} else {
					starts = append(starts, off)
				}
			}
		}
		if err != nil {
			break
		}
	}
	if !closed || len(starts) == 0 {
		p.boundary = "" // not a well-formed multipart: a leaf
		return p, nil
	}
	for i := range starts {
		c, err := parseParts(r, starts[i], ends[i], depth+1)
		if err != nil {
			return nil, err
		}
		p.children = append(p.children, c)
	}
	return p, nil
}

// lineBreakBefore is where the CRLF (or LF) before a delimiter line at
// lineStart begins: it belongs to the delimiter (RFC 2046 §5.1.1).
func lineBreakBefore(r io.ReaderAt, lineStart, floor int64) int64 {
	b := make([]byte, 2)
	if lineStart-2 >= floor {
		r.ReadAt(b, lineStart-2)
		if b[0] == '\r' && b[1] == '\n' {
			return lineStart - 2
		}
	}
	if lineStart-1 >= floor {
		r.ReadAt(b[:1], lineStart-1)
		if b[0] == '\n' {
			return lineStart - 1
		}
	}
	return lineStart
}

// leaves lists the leaf parts, depth first.
func (p *part) leaves() []*part {
	if p.boundary == "" {
		return []*part{p}
	}
	var out []*part
	for _, c := range p.children {
		out = append(out, c.leaves()...)
	}
	return out
}

// attachable: the part is a file (named, referenced by a Content-ID, an
// attachment, or not text), which Graph can take as an attachment.
func (p *part) attachable() bool {
	disp, _, _ := strings.Cut(p.h.get("content-disposition"), ";")
	mt, _ := p.mediaType()
	return p.filename() != "" || p.h.get("content-id") != "" ||
		strings.EqualFold(strings.TrimSpace(disp), "attachment") || !strings.HasPrefix(mt, "text/")
}

// filename is the part's file name (RFC 2231 and 2047 decoded), or "".
func (p *part) filename() string {
	if _, params, err := mime.ParseMediaType(p.h.get("content-disposition")); err == nil && params["filename"] != "" {
		return decodeWords(params["filename"])
	}
	_, params := p.mediaType()
	return decodeWords(params["name"])
}

func decodeWords(s string) string {
	if d, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// render writes p without the parts in skip: the header and what is kept
// as written, byte for byte.
func (p *part) render(w io.Writer, r *spool, skip map[*part]bool) error {
	if p.boundary == "" {
		_, err := io.Copy(w, r.section(p.start, p.end))
		return err
	}
	if _, err := io.Copy(w, r.section(p.start, p.preamble[1])); err != nil {
		return err
	}
	for _, c := range p.children {
		if skip[c] {
			continue
		}
		if _, err := io.WriteString(w, "--"+p.boundary+"\r\n"); err != nil {
			return err
		}
		if err := c.render(w, r, skip); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "\r\n"); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(w, "--"+p.boundary+"--\r\n"); err != nil {
		return err
	}
	_, err := io.Copy(w, r.section(p.epilogue[0], p.epilogue[1]))
	return err
}

// decoded opens a leaf's content, its transfer encoding undone.
func (p *part) decoded(r *spool) io.Reader {
	body := r.section(p.body, p.end)
	switch strings.ToLower(p.h.get("content-transfer-encoding")) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Text{r: body})
	case "quoted-printable":
		return quotedprintable.NewReader(body)
	}
	return body
}

// base64Text drops what is not base64 (line breaks, spaces), which the
// standard decoder refuses.
type base64Text struct{ r io.Reader }

func (b *base64Text) Read(p []byte) (int, error) {
	for {
		n, err := b.r.Read(p)
		k := 0
		for _, c := range p[:n] {
			if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' {
				p[k] = c
				k++
			}
		}
		if k > 0 || err != nil {
			return k, err
		}
	}
}
