package fakegraph

// The wire: Graph's error body, replies, request bodies, and the latency
// added to every answer.

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is Graph's error body (concepts/errors.md; GRAPH.md 8.1).
type apiError struct {
	status     int
	code, msg  string
	bare       bool // no innerError: bodies observed without one
	retryAfter string
	header     http.Header
	extra      map[string]any // top-level members besides "error"
}

func newError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

// reply is what a handler answers; it is written after the store's lock is
// released.
type reply struct {
	status int
	header http.Header
	body   any    // JSON
	raw    []byte // or raw bytes of type ctype
	ctype  string
	err    *apiError
	// cut: write the first cutAfter bytes of raw, then drop the connection
	// (BreakValue).
	cut      bool
	cutAfter int
}

func fail(e *apiError) reply { return reply{err: e} }

// maxRequest is the Graph front end's request limit: 4,194,304 characters
// (GRAPH.md 1.8).
const maxRequest = 4 << 20

func readBody(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if len(b) > maxRequest {
		io.Copy(io.Discard, io.LimitReader(r.Body, 256<<20)) // so the client reads the answer
		return nil, tooLarge()
	}
	if err != nil {
		return nil, newError(400, "BadRequest", "The request body could not be read.")
	}
	return b, nil
}

func tooLarge() *apiError {
	// GRAPH.md 1.8: observed 413 body (not documented), no innerError.
	e := newError(413, "BadRequest", "The maximum request length supported is 4MB.")
	e.bare = true
	return e
}

func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

func unsupportedType() *apiError {
	// GRAPH.md 1.9 (PHPGraphMailer#14).
	return newError(415, "RequestBodyRead", "A supported MIME type could not be found that matches the content type of the response.")
}

// decodeJSON reads a JSON body. [Rec] A Content-Type other than JSON is
// 415 as for sendMail (GRAPH.md 1.9); a missing one is taken as JSON.
func (c *call) decodeJSON(v any) *apiError {
	if mt := mediaType(c.r); mt != "" && mt != "application/json" {
		return unsupportedType()
	}
	if len(strings.TrimSpace(string(c.body))) == 0 {
		// [Rec] Graph's text for an empty JSON body.
		return newError(400, "BadRequest", "Empty Payload. JSON content expected.")
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		// [Rec]
		return newError(400, "RequestBodyRead", "Invalid JSON: "+err.Error())
	}
	return nil
}

const jsonType = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

func (s *Server) write(w http.ResponseWriter, rp reply, reqID, crid string) {
	for k, v := range rp.header {
		w.Header()[k] = v
	}
	if e := rp.err; e != nil {
		for k, v := range e.header {
			w.Header()[k] = v
		}
		if e.status == http.StatusTooManyRequests {
			s.throttled.Add(1)
		}
		if e.retryAfter != "" {
			w.Header().Set("Retry-After", e.retryAfter)
		}
		body := map[string]any{"code": e.code, "message": e.msg}
		if !e.bare {
			inner := map[string]any{"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": reqID, "client-request-id": crid}
			if e.status == http.StatusTooManyRequests {
				inner["code"], inner["status"] = "429", "429" // GRAPH.md 7.2 sample
			}
			body["innerError"] = inner
		}
		out := map[string]any{"error": body}
		for k, v := range e.extra {
			out[k] = v
		}
		writeJSON(w, e.status, out)
		return
	}
	switch {
	case rp.raw != nil && rp.cut:
		w.Header().Set("Content-Type", rp.ctype)
		w.Header().Set("Content-Length", strconv.Itoa(len(rp.raw)))
		w.WriteHeader(rp.status)
		w.Write(rp.raw[:min(max(rp.cutAfter, 0), len(rp.raw))])
		cutConnection(w)
	case rp.raw != nil:
		w.Header().Set("Content-Type", rp.ctype)
		w.WriteHeader(rp.status)
		w.Write(rp.raw)
	case rp.body != nil:
		writeJSON(w, rp.status, rp.body)
	default:
		w.WriteHeader(rp.status)
	}
}

// cutConnection ends the connection under an answer written in part, so
// that the client meets an unexpected EOF in the body: the connection is
// hijacked and closed, or where that cannot be (HTTP/2) the handler
// aborts, which resets the stream.
func cutConnection(w http.ResponseWriter) {
	if sw, ok := w.(*slowWriter); ok {
		w = sw.ResponseWriter
	}
	if hj, ok := w.(http.Hijacker); ok {
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // Hijack drops what the response still buffers
		}
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", jsonType)
	w.WriteHeader(status)
	w.Write(b)
}

// slowWriter holds the answer back by delay (Server.Latency) before its
// first byte, while the request still holds its concurrency slot.
type slowWriter struct {
	http.ResponseWriter
	delay  time.Duration
	ctx    context.Context
	waited bool
}

func (w *slowWriter) wait() {
	if w.waited {
		return
	}
	w.waited = true
	if w.delay > 0 {
		t := time.NewTimer(w.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.ctx.Done():
		}
	}
}

func (w *slowWriter) WriteHeader(code int) {
	w.wait()
	w.ResponseWriter.WriteHeader(code)
}

func (w *slowWriter) Write(b []byte) (int, error) {
	w.wait()
	return w.ResponseWriter.Write(b)
}
