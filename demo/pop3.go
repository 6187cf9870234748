package demo

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// servePOP3 is the demo's POP3 upstream (RFC 1939 with AUTH XOAUTH2 in the
// two-step form, RFC 5034): just what a reader of the demo mailbox needs.
func (e *Env) servePOP3(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go e.pop3Session(c)
	}
}

func (e *Env) pop3Session(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(format string, args ...any) { fmt.Fprintf(c, format+"\r\n", args...) }
	read := func() (string, bool) {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadString('\n')
		return strings.TrimRight(line, "\r\n"), err == nil
	}
	say("+OK demo POP3 upstream (XOAUTH2 only)")
	var msgs [][]byte // the maildrop, fixed at login
	deleted := map[int]bool{}
	for {
		line, ok := read()
		if !ok {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		n, _ := strconv.Atoi(arg)
		valid := msgs != nil && n >= 1 && n <= len(msgs) && !deleted[n-1]
		switch strings.ToUpper(verb) {
		case "CAPA":
			say("+OK\r\nSASL XOAUTH2\r\nUIDL\r\n.")
		case "AUTH":
			if !strings.EqualFold(arg, "XOAUTH2") || msgs != nil {
				say("-ERR only AUTH XOAUTH2")
				continue
			}
			say("+ ")
			resp, _ := read()
			raw, _ := base64.StdEncoding.DecodeString(resp)
			user, token := parseXOAUTH2(raw)
			if err := e.validate(user, token); err != nil {
				say("+ %s", base64.StdEncoding.EncodeToString([]byte(`{"status":"400","schemes":"Bearer"}`)))
				read()
				say("-ERR [AUTH] Authentication failed")
				continue
			}
			msgs = e.mailbox.inbox()
			if msgs == nil {
				msgs = [][]byte{}
			}
			say("+OK Logged in as %s", user)
		case "STAT", "LIST", "UIDL":
			if msgs == nil {
				say("-ERR log in first")
				continue
			}
			size, count := 0, 0
			var list []string
			for i, m := range msgs {
				if !deleted[i] {
					size += len(m)
					count++
					if strings.ToUpper(verb) == "UIDL" {
						list = append(list, fmt.Sprintf("%d demo-%x", i+1, m[:min(len(m), 8)]))
					} else {
						list = append(list, fmt.Sprintf("%d %d", i+1, len(m)))
					}
				}
			}
			if strings.ToUpper(verb) == "STAT" {
				say("+OK %d %d", count, size)
			} else {
				say("+OK\r\n%s.", strings.Join(append(list, ""), "\r\n"))
			}
		case "RETR":
			if !valid {
				say("-ERR no such message")
				continue
			}
			var b bytes.Buffer
			for _, l := range strings.SplitAfter(string(msgs[n-1]), "\n") {
				if strings.HasPrefix(l, ".") {
					b.WriteByte('.')
				}
				b.WriteString(l)
			}
			if !bytes.HasSuffix(b.Bytes(), []byte("\n")) && b.Len() > 0 {
				b.WriteString("\r\n")
			}
			say("+OK %d octets\r\n%s.", len(msgs[n-1]), b.String())
		case "DELE":
			if !valid {
				say("-ERR no such message")
				continue
			}
			deleted[n-1] = true
			say("+OK deleted")
		case "NOOP", "RSET":
			if verb == "RSET" {
				deleted = map[int]bool{}
			}
			say("+OK")
		case "QUIT":
			e.mailbox.remove(deleted)
			say("+OK bye")
			return
		default:
			say("-ERR unknown command")
		}
	}
}
