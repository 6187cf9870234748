package fakegraph

// $search on message lists (concepts/search-query-parameter.md): a
// double-quoted KQL string of terms, all of which must match, e.g.
// $search="pizza", "body:excitement", "subject:\"two words\"".

import (
	"sort"
	"strings"
	"unicode"
)

// searchTerm is one KQL term: a property ("" for the default ones) and the
// words of its value, a phrase when there are several.
type searchTerm struct {
	prop  string
	words []string
}

// searchFields are the properties the double searches, each with the
// message fields it looks in (search-query-parameter.md's table; a bare
// value searches "the default search properties of from, subject, and
// body").
var searchFields = map[string][]string{
	"":             {"from", "subject", "body"},
	"body":         {"body"},
	"subject":      {"subject"},
	"from":         {"from"},
	"to":           {"to"},
	"cc":           {"cc"},
	"bcc":          {"bcc"},
	"recipients":   {"to", "cc", "bcc"},
	"participants": {"from", "to", "cc", "bcc"},
}

// otherSearchProps are searchable properties the double does not search.
const otherSearchProps = " attachment hasattachment hasattachments importance kind received sent size "

func searchNotImplemented(what string) *apiError {
	// [Rec] rather than answer wrongly.
	return newError(501, "NotImplemented", "The Graph double does not implement "+what+" in $search.")
}

// parseSearch reads a $search value. The outer quotes are optional here
// ([Rec]); a phrase is in escaped quotes (\"two words\") or plain ones.
// AND between terms is allowed; OR and NOT (KQL) are not implemented.
func parseSearch(v string) ([]searchTerm, *apiError) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	v = strings.ReplaceAll(v, `\"`, `"`)
	var terms []searchTerm
	for i := 0; i < len(v); {
		if v[i] == ' ' || v[i] == '\t' {
			i++
			continue
		}
		prop := ""
		j := i
		for j < len(v) && (v[j] >= 'a' && v[j] <= 'z' || v[j] >= 'A' && v[j] <= 'Z') {
			j++
		}
		if j > i && j < len(v) && v[j] == ':' {
			prop, i = strings.ToLower(v[i:j]), j+1
		}
		var value string
		if i < len(v) && v[i] == '"' {
			k := strings.IndexByte(v[i+1:], '"')
			if k < 0 {
				k = len(v) - i - 1
			}
			value, i = v[i+1:i+1+k], min(i+2+k, len(v))
		} else {
			k := strings.IndexAny(v[i:], " \t")
			if k < 0 {
				k = len(v) - i
			}
			value, i = v[i:i+k], i+k
		}
		switch {
		case prop == "" && value == "AND":
			continue
		case prop == "" && (value == "OR" || value == "NOT"):
			return nil, searchNotImplemented(value)
		case strings.Contains(otherSearchProps, " "+prop+" "):
			return nil, searchNotImplemented("the property '" + prop + "'")
		case searchFields[prop] == nil:
			// [Rec] not a searchable property.
			return nil, newError(400, "BadRequest", "Unknown property '"+prop+"' in $search.")
		}
		if words := searchWords(value); len(words) > 0 {
			terms = append(terms, searchTerm{prop, words})
		}
	}
	if len(terms) == 0 {
		// [Rec]
		return nil, newError(400, "BadRequest", "The $search query is empty.")
	}
	return terms, nil
}

// searchWords are the words of a text, lower case: KQL matches words, not
// substrings.
func searchWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// searchDoc is a message's words by field, read when first needed.
type searchDoc struct {
	m      *message
	fields map[string][]string
}

func (d *searchDoc) words(field string) []string {
	if w, ok := d.fields[field]; ok {
		return w
	}
	m := d.m
	var text string
	addrs := func(rs []recipient) string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.Name + " " + r.Address + " ")
		}
		return b.String()
	}
	switch field {
	case "subject":
		text = m.subject
	case "from":
		if m.from != nil {
			text = addrs([]recipient{*m.from})
		}
	case "to":
		text = addrs(m.to)
	case "cc":
		text = addrs(m.cc)
	case "bcc":
		text = addrs(m.bcc)
	case "body":
		// The decoded text of the text/plain and text/html parts.
		var b strings.Builder
		h, body := splitMessage(m.render(true))
		walkText(h, body, 0, func(mt, s string) {
			if mt == "text/html" {
				s = htmlText(s)
			}
			b.WriteString(s + " ")
		})
		text = b.String()
	}
	w := searchWords(text)
	d.fields[field] = w
	return w
}

// matches: every term's words appear, in order and each as a word or
// ([Rec], as Outlook's search box finds them) a word's start: "excit"
// finds "excitement", "citem" does not. Terms are ANDed (KQL, linked from
// search-query-parameter.md: juxtaposed terms are AND).
func (d *searchDoc) matches(terms []searchTerm) bool {
	for _, t := range terms {
		found := false
		for _, f := range searchFields[t.prop] {
			if found = hasPhrase(d.words(f), t.words); found {
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func hasPhrase(words, phrase []string) bool {
	for i := 0; i+len(phrase) <= len(words); i++ {
		j := 0
		for j < len(phrase) && strings.HasPrefix(words[i+j], phrase[j]) {
			j++
		}
		if j == len(phrase) {
			return true
		}
	}
	return false
}

// maxSearchResults: "A $search request returns up to 1000 results".
const maxSearchResults = 1000

// searchMessages is a list with $search: the matches in f (nil: the whole
// mailbox), newest sent first ("The results of the search are sorted by
// the date and time that the message was sent"), paged as listings are.
func (c *call) searchMessages(f *folder, ctx string, sel *selection) reply {
	q := c.r.URL.Query()
	switch {
	case q.Has("$filter"):
		// [Obs] 400 SearchWithFilter "The query parameter '$filter' is
		// not supported with '$search'." (clients quote it, e.g.
		// PipedreamHQ/pipedream#19132).
		return fail(newError(400, "SearchWithFilter", "The query parameter '$filter' is not supported with '$search'."))
	case q.Has("$orderby"):
		// [Obs] PipedreamHQ/pipedream#19132.
		return fail(newError(400, "SearchWithOrderBy", "The query parameter '$orderBy' is not supported with '$search'."))
	}
	terms, e := parseSearch(q.Get("$search"))
	if e != nil {
		return fail(e)
	}
	var found []*message
	for _, m := range c.box.inFolder(f) {
		d := &searchDoc{m: m, fields: map[string][]string{}}
		if d.matches(terms) {
			found = append(found, m)
		}
	}
	sort.Slice(found, func(i, j int) bool {
		if !found[i].sent.Equal(found[j].sent) {
			return found[i].sent.After(found[j].sent)
		}
		return found[i].seq > found[j].seq
	})
	found = found[:min(len(found), maxSearchResults)]
	start, end, next, applied, e := c.page(len(found))
	if e != nil {
		return fail(e)
	}
	values := []any{}
	for _, m := range found[start:end] {
		values = append(values, c.messageJSON(m, sel))
	}
	return c.collection(ctx, values, len(found), next, applied)
}
