package config

// Importing a CMO web.config: the <appSettings> keys of the CMO product's
// mail settings become a mailproxy configuration, so that CMO keeps its
// settings' shape and only points its servers at 127.0.0.1.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"
)

// CMOImport is what ImportCMO makes of a CMO web.config.
type CMOImport struct {
	// YAML is the mailproxy configuration; every secret in it is an
	// ${env:NAME} reference (Vars).
	YAML []byte
	// Listeners are the local listeners chosen: CMO has no such setting.
	Listeners []CMOListener
	// Vars are the environment variables the YAML reads, in order.
	Vars []CMOVar
	// WebConfig is what to change in web.config so that CMO talks to
	// mailproxy.
	WebConfig []CMOSetting
	// SignIns are the commands that sign each delegated (Public) account
	// in once.
	SignIns []string
	// NotMapped says what of web.config has no place in the YAML, and why.
	NotMapped []string
	// Notes are choices the import made that deserve a look.
	Notes []string
	// Problems keep the result from running, one line per key: a mandatory
	// key missing, a value CMO does not have, keys that contradict.
	Problems []string
}

// CMOListener is one local listener the import chose.
type CMOListener struct {
	Profile, Proto, Listen string
	// Username is the local login, "" when the listener takes mail
	// without AUTH.
	Username string
}

// CMOVarKind says where the value of a variable comes from.
type CMOVarKind int

const (
	// CMOFromWebConfig is a secret web.config has: Value holds it.
	CMOFromWebConfig CMOVarKind = iota
	// CMOLocalPassword is a local password to choose; CMO logs in with it.
	CMOLocalPassword
	// CMOStoreKey is a token store key (mailproxy key generate).
	CMOStoreKey
)

// CMOVar is an environment variable the YAML reads.
type CMOVar struct {
	Name string
	Kind CMOVarKind
	// Holds says what it holds, and where from.
	Holds string
	// Value is the secret as web.config has it (XML entities decoded),
	// for CMOFromWebConfig.
	Value Secret
}

// CMOSetting is one web.config key to set.
type CMOSetting struct {
	Key, Value string
	// Comment says what Value is when it is not literal (a password).
	Comment string
}

// CMO defaults and the choices the import makes where CMO has nothing.
const (
	cmoTokenStorePath = "/var/lib/mailproxy/tokens.enc"
	cmoStoreKeyVar    = "MAILPROXY_STORE_KEY"
	cmoMSALCacheFile  = "cmo_msal_cache.dat"
	googleP12Password = "notasecret"
)

// cmoProtocols are the mail protocols CMO's Server keys talk, with the port
// CMO connects to without one: UseSsl's TLS from the first byte, or not.
var cmoProtocols = map[string]struct{ implicitPort, plainPort, eg string }{
	"smtp": {"465", "25", "smtp.gmail.com"},
	"imap": {"993", "143", "imap.gmail.com"},
	"pop3": {"995", "110", "pop.gmail.com"},
}

// cmoMailbox is one of CMO's further mailboxes, which take what they do
// not say from Mail.Receiving, with the profile and ports chosen for it.
type cmoMailbox struct{ profile, prefix, imapPort, pop3Port string }

var cmoMailboxes = []cmoMailbox{
	{"new-action", "Mail.NewAction.EmailClient.", "1144", "1111"},
	{"document-import", "Mail.DocumentImport.EmailClient.", "1145", "1112"},
}

// cmoAliases are the spellings accepted for a name under a section (keys
// are compared without regard to case). The first is the one written.
var cmoAliases = map[string][]string{
	"Server":                           {"Server", "Host"},
	"Port":                             {"Port"},
	"UseSsl":                           {"UseSsl", "EnableSsl"},
	"Login":                            {"Login", "UserName"},
	"AuthType":                         {"AuthType", "AuthenticationType"},
	"GoogleOAuth2.CertificatePath":     {"GoogleOAuth2.CertificatePath", "GoogleOAuth2.Certificate", "GoogleOAuth2.CertificateFile", "CertificatePath"},
	"GoogleOAuth2.CertificatePassword": {"GoogleOAuth2.CertificatePassword", "CertificatePassword"},
	"GoogleOAuth2.ServiceAccount":      {"GoogleOAuth2.ServiceAccount", "GoogleOAuth2.ServiceAccountEmail", "ServiceAccount", "ServiceAccountEmail"},
	"GoogleOAuth2.GsuiteUser":          {"GoogleOAuth2.GsuiteUser", "GoogleOAuth2.ImpersonatedUser", "GsuiteUser", "ImpersonatedUser"},
}

// cmoGoogleNames are the keys of AuthType GoogleOAuth2.
var cmoGoogleNames = []string{"GoogleOAuth2.CertificatePath", "GoogleOAuth2.CertificatePassword", "GoogleOAuth2.ServiceAccount", "GoogleOAuth2.GsuiteUser"}

// cmoTokenHelperPrefixes are where the token helper's keys may be: its own
// App.config has them bare.
var cmoTokenHelperPrefixes = []string{"TokenHelper.", "MSAL.TokenHelper.", "MSAL.", ""}

// cmoTokenHelperNames are the token helper's keys.
var cmoTokenHelperNames = []string{"ClientId", "TenantId", "RedirectUri", "CacheFileName", "CacheDirectory"}

// ImportCMO turns the <appSettings> of a CMO web.config (or a plain
// key=value list) into a mailproxy configuration. The error is for input
// that is neither; everything else is said in the result.
func ImportCMO(data []byte) (*CMOImport, error) {
	keys, err := parseCMOKeys(data)
	if err != nil {
		return nil, err
	}
	im := &cmoImporter{keys: keys, out: &CMOImport{}, vars: map[string]string{}}
	im.out.Notes = append(im.out.Notes, keys.notes...)
	im.helper = im.tokenHelper()
	if p := im.sending(); p != nil {
		im.profiles = append(im.profiles, p)
	}
	im.receiving()
	im.signIns()
	im.leftovers()
	if len(im.profiles) == 0 && len(im.out.Problems) == 0 {
		im.problem("Mail.Sending.ServerType", "nothing to import: no Mail.Sending or Mail.Receiving setting mailproxy can serve")
	}
	im.out.YAML, err = im.yaml()
	return im.out, err
}

// cmoKeys are web.config's appSettings, looked up without regard to case
// as .NET does.
type cmoKeys struct {
	order []string            // lower-case keys, in the file's order
	vals  map[string]cmoEntry // by lower-case key
	used  map[string]bool     // read (or reported) by the import
	notes []string            // duplicate keys, files not read
	xml   bool                // read from web.config XML
}

type cmoEntry struct{ key, value string }

func (k *cmoKeys) set(key, value string) {
	lk := strings.ToLower(key)
	if old, ok := k.vals[lk]; ok {
		if old.value != value {
			k.notes = append(k.notes, fmt.Sprintf("%s is given twice: the last value is used, as CMO does", old.key))
		}
		key = old.key
	} else {
		k.order = append(k.order, lk)
	}
	k.vals[lk] = cmoEntry{key, value}
}

func (k *cmoKeys) remove(key string) {
	lk := strings.ToLower(key)
	delete(k.vals, lk)
	k.order = slices.DeleteFunc(k.order, func(s string) bool { return s == lk })
}

// get returns key's entry and marks it read.
func (k *cmoKeys) get(key string) (cmoEntry, bool) {
	e, ok := k.vals[strings.ToLower(key)]
	if ok {
		k.used[strings.ToLower(key)] = true
	}
	return e, ok
}

// under lists the keys below prefix, in the file's order.
func (k *cmoKeys) under(prefix string) []string {
	var out []string
	for _, lk := range k.order {
		if strings.HasPrefix(lk, strings.ToLower(prefix)) {
			out = append(out, lk)
		}
	}
	return out
}

// parseCMOKeys reads appSettings from web.config XML, or key=value lines.
func parseCMOKeys(data []byte) (*cmoKeys, error) {
	k := &cmoKeys{vals: map[string]cmoEntry{}, used: map[string]bool{}}
	utf16Input := false
	if len(data) >= 2 && (data[0] == 0xFF && data[1] == 0xFE || data[0] == 0xFE && data[1] == 0xFF) {
		data, utf16Input = utf16ToUTF8(data), true
	}
	data = bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '<' {
		k.xml = true
		return k, k.parseXML(data, utf16Input)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) == "" {
			return nil, fmt.Errorf("line %d: %q is not key=value (nor is the file web.config XML)", i+1, line)
		}
		k.set(strings.TrimSpace(key), strings.TrimSpace(value))
	}
	return k, nil
}

// parseXML reads the add, remove and clear elements of every appSettings
// element, as .NET applies them; a fragment of bare <add .../> lines too.
func (k *cmoKeys) parseXML(data []byte, utf16Input bool) error {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.CharsetReader = func(charset string, r io.Reader) (io.Reader, error) {
		switch cs := strings.ToLower(charset); {
		case cs == "us-ascii", utf16Input && (cs == "utf-16" || cs == "unicode"):
			return r, nil // already UTF-8
		}
		return nil, fmt.Errorf("encoding %q: save web.config as UTF-8", charset)
	}
	var stack []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a web.config: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := strings.ToLower(t.Name.Local)
			parent := ""
			if len(stack) > 0 {
				parent = stack[len(stack)-1]
			}
			stack = append(stack, name)
			if name == "appsettings" {
				for _, a := range []string{"file", "configSource"} {
					if f := xmlAttr(t, a); f != "" {
						k.notes = append(k.notes, fmt.Sprintf("appSettings %s=%q: the keys of that file are not read here; import it too (or paste its <add> lines into this one)", a, f))
					}
				}
			}
			if parent != "appsettings" && parent != "" {
				continue
			}
			switch name {
			case "add":
				if key := xmlAttr(t, "key"); key != "" {
					k.set(key, xmlAttr(t, "value"))
				}
			case "remove":
				k.remove(xmlAttr(t, "key"))
			case "clear":
				k.order, k.vals = nil, map[string]cmoEntry{}
			}
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// xmlAttr is an attribute's value (entities decoded), its name compared
// without regard to case.
func xmlAttr(t xml.StartElement, name string) string {
	for _, a := range t.Attr {
		if strings.EqualFold(a.Name.Local, name) {
			return a.Value
		}
	}
	return ""
}

// utf16ToUTF8 decodes UTF-16 with its byte order mark.
func utf16ToUTF8(b []byte) []byte {
	big := b[0] == 0xFE
	b = b[2:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		if big {
			u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
		} else {
			u = append(u, uint16(b[i+1])<<8|uint16(b[i]))
		}
	}
	return []byte(string(utf16.Decode(u)))
}

// cmoSrc is where one mailbox's settings are read: a mailbox's own keys
// (own, e.g. Mail.NewAction.EmailClient.) win over those it inherits
// (base, e.g. Mail.Receiving.Imap.).
type cmoSrc struct{ own, base string }

// prefixes are the prefixes name is looked up under, in order. A mailbox
// takes UseSsl from Mail.Receiving only.
func (s cmoSrc) prefixes(name string) []string {
	if s.own == "" || name == "UseSsl" {
		return []string{s.base}
	}
	return []string{s.own, s.base}
}

// key is the name of name's key as messages give it: the mailbox's own.
func (s cmoSrc) key(name string) string {
	if p := s.prefixes(name); len(p) > 1 {
		return p[0] + name + " (or " + p[1] + name + ")"
	}
	return s.base + name
}

type cmoImporter struct {
	keys     *cmoKeys
	out      *CMOImport
	profiles []*cmoProfile
	vars     map[string]string // lower-case source key -> variable
	helper   cmoHelper
	store    bool // a token store is needed
}

// cmoProfile is one profile of the result, whole; the YAML writes what it
// does not inherit.
type cmoProfile struct {
	name, head string
	parent     string // the profile it inherits from, if any
	body       *ymap
	account    string // the account that signs in, for a Public app
}

// cmoHelper is what the token helper and MSAL keys say.
type cmoHelper struct {
	clientID, tenantID, redirect cmoEntry
	cache                        string // the cache file CMO's accounts are in
	keys                         []string
}

func (im *cmoImporter) problem(key, format string, args ...any) {
	im.out.Problems = append(im.out.Problems, key+": "+fmt.Sprintf(format, args...))
}

func (im *cmoImporter) note(format string, args ...any) {
	im.out.Notes = append(im.out.Notes, fmt.Sprintf(format, args...))
}

func (im *cmoImporter) notMapped(format string, args ...any) {
	im.out.NotMapped = append(im.out.NotMapped, fmt.Sprintf(format, args...))
}

// get is name's entry for the mailbox s, in its first spelling found.
func (im *cmoImporter) get(s cmoSrc, name string) (cmoEntry, bool) {
	spellings := cmoAliases[name]
	if spellings == nil {
		spellings = []string{name}
	}
	for _, p := range s.prefixes(name) {
		for _, sp := range spellings {
			if e, ok := im.keys.get(p + sp); ok {
				return e, true
			}
		}
	}
	return cmoEntry{}, false
}

// require is name's value, spaces around it removed, or a problem saying
// why it is needed.
func (im *cmoImporter) require(s cmoSrc, name, why string) (cmoEntry, bool) {
	e, ok := im.requireSecret(s, name, why)
	e.value = strings.TrimSpace(e.value)
	return e, ok
}

// requireSecret is name's value exactly as written, or a problem.
func (im *cmoImporter) requireSecret(s cmoSrc, name, why string) (cmoEntry, bool) {
	e, ok := im.get(s, name)
	if !ok || strings.TrimSpace(e.value) == "" {
		im.problem(s.key(name), "required %s", why)
		return cmoEntry{}, false
	}
	return e, true
}

// spell is the key web.config writes name with under prefix: its own
// spelling if it has the key, else the first accepted one.
func (im *cmoImporter) spell(prefix, name string) string {
	spellings := cmoAliases[name]
	if spellings == nil {
		spellings = []string{name}
	}
	for _, sp := range spellings {
		if e, ok := im.keys.vals[strings.ToLower(prefix+sp)]; ok {
			return e.key
		}
	}
	return prefix + spellings[0]
}

// choice is name's value among allowed (compared without regard to case),
// def when it is missing; "" with a problem otherwise.
func (im *cmoImporter) choice(s cmoSrc, name, def string, allowed ...string) string {
	e, ok := im.get(s, name)
	v := strings.TrimSpace(e.value)
	if !ok || v == "" {
		if def == "" {
			im.problem(s.key(name), "required: one of %s (CMO has no default)", strings.Join(allowed, ", "))
		}
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	im.problem(e.key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return ""
}

// boolean is name's True or False (def when missing), as .NET parses
// it; false with a problem when it is neither.
func (im *cmoImporter) boolean(s cmoSrc, name string, def bool) (value, ok bool) {
	e, found := im.get(s, name)
	v := strings.TrimSpace(e.value)
	switch {
	case !found || v == "":
		return def, true
	case strings.EqualFold(v, "true"):
		return true, true
	case strings.EqualFold(v, "false"):
		return false, true
	}
	im.problem(e.key, "%q is not True or False", v)
	return def, false
}

// ignore reports the keys under prefix nothing read as not used, and why.
func (im *cmoImporter) ignore(prefix, why string) {
	var names []string
	for _, lk := range im.keys.under(prefix) {
		if !im.keys.used[lk] {
			im.keys.used[lk] = true
			names = append(names, im.keys.vals[lk].key)
		}
	}
	if len(names) > 0 {
		im.notMapped("%s: not used: %s", strings.Join(names, ", "), why)
	}
}

// unused reports the mailbox's own keys among names as not used, and why.
func (im *cmoImporter) unused(s cmoSrc, why string, names ...string) {
	own := cmoSrc{base: s.base}
	if s.own != "" {
		own = cmoSrc{base: s.own}
	}
	var found []string
	for _, n := range names {
		if e, ok := im.get(own, n); ok {
			found = append(found, e.key)
		}
	}
	if len(found) > 0 {
		im.notMapped("%s: not used: %s", strings.Join(found, ", "), why)
	}
}

// secret is the ${env:NAME} reference of web.config's secret e, one
// variable per key.
func (im *cmoImporter) secret(profile, suffix string, e cmoEntry, holds string) string {
	lk := strings.ToLower(e.key)
	if name, ok := im.vars[lk]; ok {
		return "${env:" + name + "}"
	}
	name := envName(profile, suffix)
	im.vars[lk] = name
	holds = fmt.Sprintf("%s: %s in web.config", holds, e.key)
	if im.keys.xml && strings.ContainsAny(e.value, `&<>"'`) {
		holds += " (set it as CMO reads it: where web.config writes an entity such as &amp;, the character it stands for)"
	}
	im.out.Vars = append(im.out.Vars, CMOVar{Name: name, Kind: CMOFromWebConfig, Holds: holds, Value: NewSecret(e.value)})
	return "${env:" + name + "}"
}

// envName is MAILPROXY_PROFILE_SUFFIX.
func envName(profile, suffix string) string {
	return "MAILPROXY_" + strings.ToUpper(strings.ReplaceAll(profile, "-", "_")) + "_" + suffix
}

// localUser adds the profile's local login; CMO logs in with it.
func (im *cmoImporter) localUser(profile string, body *ymap) string {
	username := "cmo-" + profile
	name := envName(profile, "LOCAL_PASSWORD")
	im.out.Vars = append(im.out.Vars, CMOVar{Name: name, Kind: CMOLocalPassword,
		Holds: fmt.Sprintf("a password you choose for local user %s: web.config gets the same (below)", username)})
	u := &ymap{}
	u.set("username", username, "")
	u.set("password", "${env:"+name+"}", "")
	body.set("local_users", []*ymap{u}, "CMO logs in to mailproxy with this")
	return username
}

// webConfig adds a web.config line.
func (im *cmoImporter) webConfig(key, value, comment string) {
	im.out.WebConfig = append(im.out.WebConfig, CMOSetting{Key: key, Value: value, Comment: comment})
}

// listener adds a local listener to the report.
func (im *cmoImporter) listener(profile, proto, listen, username string) {
	im.out.Listeners = append(im.out.Listeners, CMOListener{Profile: profile, Proto: proto, Listen: listen, Username: username})
}

// tokenHelper reads the token helper's keys and MSAL's cache keys.
func (im *cmoImporter) tokenHelper() cmoHelper {
	var h cmoHelper
	found := map[string]cmoEntry{}
	for _, name := range cmoTokenHelperNames {
		for _, p := range cmoTokenHelperPrefixes {
			if e, ok := im.keys.get(p + name); ok {
				found[name] = e
				h.keys = append(h.keys, e.key)
				break
			}
		}
	}
	h.clientID, h.tenantID, h.redirect = found["ClientId"], found["TenantId"], found["RedirectUri"]
	folder, file := found["CacheDirectory"].value, found["CacheFileName"].value
	for _, k := range []struct {
		key string
		dst *string
	}{{"MSAL.Cache.Folder", &folder}, {"MSAL.Cache.FileName", &file}} {
		if e, ok := im.keys.get(k.key); ok {
			h.keys = append(h.keys, e.key)
			if e.value != "" {
				*k.dst = e.value
			}
		}
	}
	if file == "" {
		file = cmoMSALCacheFile
	}
	h.cache = file
	if folder != "" {
		h.cache = strings.TrimRight(folder, `\/`) + `\` + file
	}
	return h
}

// sending maps Mail.Sending to the profile "sending".
func (im *cmoImporter) sending() *cmoProfile {
	if len(im.keys.under("Mail.Sending.")) == 0 {
		im.notMapped("Mail.Sending: no such keys: no smtp profile")
		return nil
	}
	top := cmoSrc{base: "Mail.Sending."}
	p := &cmoProfile{name: "sending", body: &ymap{}}
	switch im.choice(top, "ServerType", "Smtp", "Smtp", "Microsoft365") {
	case "Smtp":
		im.ignore("Mail.Sending.Microsoft365.", "Mail.Sending.ServerType is Smtp")
		if !im.smtpSending(p) {
			return nil
		}
	case "Microsoft365":
		im.ignore("Mail.Sending.Smtp.", "Mail.Sending.ServerType is Microsoft365 (Graph sends each message in its own request)")
		src := cmoSrc{base: "Mail.Sending.Microsoft365."}
		p.head = "Mail.Sending: ServerType Microsoft365, through Microsoft Graph"
		graph, creds := im.graphMailbox(src, p)
		p.body.set("graph", graph, "")
		smtp := &ymap{}
		smtp.set("listen", "127.0.0.1:2525", "")
		p.body.set("smtp", smtp, "Graph's sendMail: no upstream")
		user := im.localUser(p.name, p.body)
		p.body.set("credentials", creds, "")
		im.listener(p.name, "smtp", "127.0.0.1:2525", user)
		im.webConfig(im.spell("Mail.Sending.", "ServerType"), "Smtp", "")
		im.smtpWebConfig(true, user)
	default:
		im.ignore("Mail.Sending.", "Mail.Sending.ServerType is not known")
		return nil
	}
	return p
}

// smtpSending maps Mail.Sending.Smtp; false when it needs no mailproxy.
func (im *cmoImporter) smtpSending(p *cmoProfile) bool {
	src := cmoSrc{base: "Mail.Sending.Smtp."}
	useAuth, _ := im.boolean(src, "UseAuth", false)
	auth := im.choice(src, "AuthType", "BasicAuth", "BasicAuth", "GoogleOAuth2")
	if !useAuth && auth == "BasicAuth" {
		_, login := im.get(src, "Login")
		_, pw := im.get(src, "Password")
		if !login && !pw {
			im.notMapped("Mail.Sending.Smtp: UseAuth is False and there is no Login: CMO sends without logging in, which needs no proxy (mailproxy always logs in upstream): keep Mail.Sending as it is")
			im.ignore("Mail.Sending.Smtp.", "CMO's sending stays as it is")
			return false
		}
		im.note("Mail.Sending.Smtp.UseAuth is False: CMO sends to mailproxy without AUTH (local_auth: none); mailproxy logs in upstream with Login and Password, which CMO did not")
	}
	p.head = "Mail.Sending: ServerType Smtp, AuthType " + auth
	smtp := &ymap{}
	smtp.set("listen", "127.0.0.1:2525", "")
	if !useAuth {
		smtp.set("local_auth", LocalAuthNone, im.spell("Mail.Sending.Smtp.", "UseAuth")+" False: CMO sends no AUTH")
	}
	up := im.upstream(src, "smtp")
	n := DefaultMessagesPerSession
	why := "CMO's default"
	if e, ok := im.get(src, "NumberOfMessagesPerSession"); ok && strings.TrimSpace(e.value) != "" {
		why = e.key
		v, err := strconv.Atoi(strings.TrimSpace(e.value))
		if err != nil || v < 1 {
			im.problem(e.key, "%q is not a number of messages, 1 or more", e.value)
		} else {
			n = v
		}
	}
	up.set("messages_per_session", n, why)
	smtp.set("upstream", up, "")
	mailbox, creds := im.serverCredentials(src, p.name, auth, "smtp")
	p.body.set("mailbox", mailbox.value, mailbox.key)
	p.body.set("smtp", smtp, "")
	user := ""
	if useAuth {
		user = im.localUser(p.name, p.body)
	}
	p.body.set("credentials", creds, "")
	im.listener(p.name, "smtp", "127.0.0.1:2525", user)
	im.smtpWebConfig(auth != "BasicAuth", user)
	return true
}

// smtpWebConfig says how CMO sends to mailproxy's smtp listener.
func (im *cmoImporter) smtpWebConfig(setAuthType bool, user string) {
	p := "Mail.Sending.Smtp."
	im.webConfig(im.spell(p, "Server"), "127.0.0.1:2525", "")
	im.webConfig(im.spell(p, "UseSsl"), "False", "")
	if setAuthType {
		im.webConfig(im.spell(p, "AuthType"), "BasicAuth", "")
	}
	if user != "" {
		im.webConfig(im.spell(p, "UseAuth"), "True", "")
		im.webConfig(im.spell(p, "Login"), user, "")
		im.webConfig(im.spell(p, "Password"), "…", "the value of "+envName("sending", "LOCAL_PASSWORD"))
	}
}

// upstream maps Server, Port and UseSsl as CMO connects: with UseSsl,
// TLS from the first byte (465, 993, 995 without a port), else STARTTLS
// (25, 143, 110). A port that has its own TLS wins over UseSsl.
func (im *cmoImporter) upstream(s cmoSrc, proto string) *ymap {
	pr := cmoProtocols[proto]
	up := &ymap{}
	server, ok := im.require(s, "Server", "host[:port] of the "+strings.ToUpper(proto)+" server, e.g. "+pr.eg)
	if !ok {
		return up
	}
	sslKey := im.spell(s.base, "UseSsl")
	useSsl, sslOK := im.boolean(s, "UseSsl", false)
	host, port := server.value, ""
	if h, p, err := net.SplitHostPort(server.value); err == nil {
		host, port = h, p
	}
	if e, ok := im.get(s, "Port"); ok && strings.TrimSpace(e.value) != "" {
		switch pv := strings.TrimSpace(e.value); {
		case port != "" && port != pv:
			im.problem(e.key, "%s contradicts the port of %s (%s)", pv, server.key, server.value)
		default:
			port = pv
		}
	}
	if n, err := strconv.Atoi(port); port != "" && (err != nil || n < 1 || n > 65535) {
		im.problem(server.key, "%q has no valid port", server.value)
	}
	tls, why := TLSStartTLS, sslKey+" False"
	if useSsl {
		tls, why = TLSImplicit, sslKey+" True"
	}
	switch port {
	case "":
		port = pr.plainPort
		if useSsl {
			port = pr.implicitPort
		}
	case pr.implicitPort:
		if !useSsl {
			tls, why = TLSImplicit, "port "+port
			if sslOK {
				im.note("%s: port %s speaks TLS from the first byte: tls: implicit, although %s is False", server.key, port, sslKey)
			}
		}
	case pr.plainPort, "587":
		if useSsl {
			tls, why = TLSStartTLS, "port "+port
			im.note("%s: port %s takes STARTTLS: tls: starttls, although %s is True", server.key, port, sslKey)
		}
	}
	if tls == TLSStartTLS && !useSsl && sslOK {
		im.note("%s: mailproxy requires STARTTLS of %s (tls: starttls), which %s False does not promise: if the server offers none, write tls: none", server.key, net.JoinHostPort(host, port), sslKey)
	}
	up.set("host", net.JoinHostPort(host, port), server.key)
	up.set("tls", tls, why)
	return up
}

// serverCredentials maps AuthType and its keys for a mail server; it
// returns the mailbox and the credentials.
func (im *cmoImporter) serverCredentials(s cmoSrc, profile, auth, proto string) (cmoEntry, *ymap) {
	creds := &ymap{}
	switch auth {
	case "BasicAuth":
		im.unused(s, "AuthType is BasicAuth", cmoGoogleNames...)
		login, _ := im.require(s, "Login", "with AuthType BasicAuth: the "+strings.ToUpper(proto)+" login")
		creds.set("type", CredBasic, "")
		creds.set("username", login.value, login.key)
		if pw, ok := im.requireSecret(s, "Password", "with AuthType BasicAuth: the "+strings.ToUpper(proto)+" password"); ok {
			creds.set("password", im.secret(profile, "PASSWORD", pw, "the upstream password"), "")
		}
		return login, creds
	case "GoogleOAuth2":
		im.unused(s, "AuthType is GoogleOAuth2 (the service account's key replaces it)", "Password")
		creds.set("type", CredGoogleServiceAccount, "")
		sa, hasSA := im.get(s, "GoogleOAuth2.ServiceAccount")
		if cert, ok := im.require(s, "GoogleOAuth2.CertificatePath", "with AuthType GoogleOAuth2: the service account's key (.p12)"); ok {
			creds.set("key_file", cert.value, cert.key+": copy the file if mailproxy runs elsewhere")
			base := cert.value[strings.LastIndexAny(cert.value, `/\`)+1:]
			switch strings.ToLower(filepath.Ext(base)) {
			case ".p12":
				im.require(s, "GoogleOAuth2.ServiceAccount", "with a .p12 key, which does not name its account: the service account's e-mail")
			case ".json":
			default:
				im.problem(cert.key, "%s: mailproxy reads a Google key as .p12 or .json, by its name: copy it to a name ending in .p12", cert.value)
			}
		}
		if hasSA && strings.TrimSpace(sa.value) != "" {
			creds.set("service_account", strings.TrimSpace(sa.value), sa.key)
		}
		if e, ok := im.get(s, "GoogleOAuth2.CertificatePassword"); ok && e.value != "" && e.value != googleP12Password {
			im.problem(e.key, "mailproxy opens .p12 keys with Google's password %q: export the key again from Google", googleP12Password)
		}
		user, hasUser := im.get(s, "GoogleOAuth2.GsuiteUser")
		login, hasLogin := im.get(s, "Login")
		switch {
		case hasUser && strings.TrimSpace(user.value) != "":
			if hasLogin && login.value != "" && !strings.EqualFold(strings.TrimSpace(login.value), strings.TrimSpace(user.value)) {
				im.problem(login.key, "%q contradicts %s %q: the token is the Workspace user's, and Gmail takes it for that mailbox only", login.value, user.key, user.value)
			}
		case hasLogin && strings.TrimSpace(login.value) != "":
			user = login
		default:
			im.problem(s.key("GoogleOAuth2.GsuiteUser"), "required with AuthType GoogleOAuth2: the Workspace user the service account acts as")
		}
		user.value = strings.TrimSpace(user.value)
		creds.set("impersonate", user.value, user.key)
		return user, creds
	}
	return cmoEntry{}, creds
}

// graphMailbox maps a Microsoft365 section (IntegrationType and its app's
// keys) to graph: and credentials; it sets the profile's mailbox.
func (im *cmoImporter) graphMailbox(s cmoSrc, p *cmoProfile) (*ymap, *ymap) {
	graph, creds := &ymap{}, &ymap{}
	creds.set("type", CredMicrosoft365, "")
	own := s.base
	if s.own != "" {
		own = s.own
	}
	switch im.choice(s, "IntegrationType", "", "Confidential", "Public") {
	case "":
		im.ignore(own, "IntegrationType is not known")
	case "Confidential":
		im.ignore(own+"PublicApp.", "IntegrationType is Confidential")
		creds.set("app", AppConfidential, im.spell(own, "IntegrationType"))
		for _, k := range []struct{ name, field, why string }{
			{"ConfidentialApp.TenantId", "tenant_id", "the directory (tenant) ID"},
			{"ConfidentialApp.ClientId", "client_id", "the application (client) ID"},
		} {
			if e, ok := im.require(s, k.name, "with IntegrationType Confidential: "+k.why); ok {
				creds.set(k.field, e.value, e.key)
			}
		}
		if e, ok := im.requireSecret(s, "ConfidentialApp.Secret", "with IntegrationType Confidential: the client secret"); ok {
			creds.set("client_secret", im.secret(p.name, "CLIENT_SECRET", e, "the client secret of the Entra app"), "")
		}
		if e, ok := im.require(s, "ConfidentialApp.UserObjectId", "with IntegrationType Confidential: the mailbox's user object ID"); ok {
			p.body.set("mailbox", e.value, e.key+": CMO has no address; write the mailbox's, for clearer logs")
			graph.set("user", e.value, e.key)
		}
	case "Public":
		im.ignore(own+"ConfidentialApp.", "IntegrationType is Public")
		creds.set("app", AppPublic, im.spell(own, "IntegrationType")+": a person signs in once")
		for _, k := range []struct {
			name, field, why string
			fallback         cmoEntry
		}{
			{"PublicApp.TenantId", "tenant_id", "the directory (tenant) ID", im.helper.tenantID},
			{"PublicApp.ClientId", "client_id", "the application (client) ID", im.helper.clientID},
		} {
			e, ok := im.get(s, k.name)
			switch {
			case ok && e.value != "":
				if k.fallback.value != "" && !strings.EqualFold(k.fallback.value, e.value) {
					im.note("%s %q differs from %s %q: mailproxy signs in with %s, which CMO reads mail with", k.fallback.key, k.fallback.value, e.key, e.value, e.key)
				}
			case k.fallback.value != "":
				e = k.fallback
				im.note("%s is missing: the token helper's %s is used", s.key(k.name), e.key)
			default:
				im.problem(s.key(k.name), "required with IntegrationType Public: %s", k.why)
				continue
			}
			creds.set(k.field, strings.TrimSpace(e.value), e.key)
		}
		if e, ok := im.require(s, "PublicApp.AccountName", "with IntegrationType Public: the account that signs in"); ok {
			p.body.set("mailbox", e.value, e.key)
			creds.set("account", e.value, e.key)
			p.account = e.value
		}
		redirect, ok := im.get(s, "PublicApp.RedirectUri")
		if !ok || redirect.value == "" {
			redirect = im.helper.redirect
		}
		if redirect.value != "" {
			creds.set("redirect_url", redirect.value, redirect.key)
		}
		im.store = true
	}
	return graph, creds
}

// cmoReceivingTypes are Mail.Receiving.ServerType's values and the
// section of each one's keys.
var cmoReceivingTypes = []struct{ serverType, section string }{
	{"IMAP", "Imap."}, {"POP3", "Pop3."}, {"MAPI", "Mapi."}, {"Microsoft365", "Microsoft365."},
}

// receiving maps Mail.Receiving to the profile "receiving", and the
// mailboxes that inherit from it to profiles that say inherit: receiving.
func (im *cmoImporter) receiving() {
	var boxes []int
	for i, mb := range cmoMailboxes {
		if len(im.keys.under(mb.prefix)) > 0 {
			boxes = append(boxes, i)
		}
	}
	if len(im.keys.under("Mail.Receiving.")) == 0 && len(boxes) == 0 {
		im.notMapped("Mail.Receiving: no such keys: no imap or pop3 profile")
		return
	}
	var allowed []string
	for _, t := range cmoReceivingTypes {
		allowed = append(allowed, t.serverType)
	}
	st := im.choice(cmoSrc{base: "Mail.Receiving."}, "ServerType", "", allowed...)
	section := ""
	for _, t := range cmoReceivingTypes {
		if t.serverType == st {
			section = t.section
		} else if st != "" {
			im.ignore("Mail.Receiving."+t.section, "Mail.Receiving.ServerType is "+st)
		}
	}
	skip := ""
	switch st {
	case "":
		skip = "Mail.Receiving.ServerType is not known"
	case "MAPI":
		im.notMapped("Mail.Receiving.ServerType: MAPI is not supported: it is Exchange's own protocol (Outlook's, over RPC or HTTP), which mailproxy does not speak; CMO goes on reading Exchange on premises over MAPI without mailproxy. For Exchange Online use ServerType Microsoft365 (Graph), or IMAP or POP3")
		skip = "Mail.Receiving.ServerType is MAPI"
	case "Microsoft365":
		im.note("Mail.Receiving.ServerType Microsoft365: mailproxy serves CMO IMAP over Microsoft Graph, not POP3: IMAP leaves messages, flags and folders in the mailbox and removes only what CMO expunges, where POP3 over Graph serves one folder and takes away what CMO deletes; IMAP keeps its UIDs in graph.state_dir")
	}
	if skip != "" {
		im.ignore("Mail.Receiving.", skip)
		for _, i := range boxes {
			im.ignore(cmoMailboxes[i].prefix, skip)
		}
		return
	}
	base := "Mail.Receiving." + section
	first := len(im.out.WebConfig) // where the lines every mailbox takes go
	recv := im.receivingProfile(cmoSrc{base: base}, st, "receiving", "Mail.Receiving", "1143", "1110", len(boxes) > 0)
	if recv != nil {
		im.profiles = append(im.profiles, recv)
	}
	made := recv != nil
	for _, i := range boxes {
		mb := cmoMailboxes[i]
		own := mb.prefix
		if st == "Microsoft365" {
			im.ignoreExcept(own, own+"Microsoft365.", "Mail.Receiving.ServerType is Microsoft365")
			own += "Microsoft365."
		} else {
			im.ignore(own+"Microsoft365.", "Mail.Receiving.ServerType is "+st)
		}
		label := strings.TrimSuffix(mb.prefix, ".")
		p := im.receivingProfile(cmoSrc{own: own, base: base}, st, mb.profile, label, mb.imapPort, mb.pop3Port, false)
		if recv != nil {
			p.parent = recv.name
			p.head += "; the rest from Mail.Receiving"
		}
		im.profiles = append(im.profiles, p)
		made = true
	}
	if made {
		// What every mailbox takes from Mail.Receiving.
		sec := section
		var common []CMOSetting
		if st == "Microsoft365" {
			sec = "Imap."
			common = append(common, CMOSetting{Key: im.spell("Mail.Receiving.", "ServerType"), Value: "IMAP"})
		}
		ssl := im.spell("Mail.Receiving."+sec, "UseSsl")
		if _, written := im.keys.vals[strings.ToLower(ssl)]; !written {
			ssl = "Mail.Receiving." + sec + "UseSSL" // as CMO spells it there
		}
		common = append(common, CMOSetting{Key: ssl, Value: "False"})
		im.out.WebConfig = slices.Insert(im.out.WebConfig, first, common...)
	}
}

// ignoreExcept reports the unread keys under prefix, but not those under
// keep, as not used.
func (im *cmoImporter) ignoreExcept(prefix, keep, why string) {
	var names []string
	for _, lk := range im.keys.under(prefix) {
		if !im.keys.used[lk] && !strings.HasPrefix(lk, strings.ToLower(keep)) {
			im.keys.used[lk] = true
			names = append(names, im.keys.vals[lk].key)
		}
	}
	if len(names) > 0 {
		im.notMapped("%s: not used: %s", strings.Join(names, ", "), why)
	}
}

// receivingProfile maps one receiving mailbox: IMAP or POP3 with its
// upstream, or Microsoft365 through Graph (IMAP). A Mail.Receiving that
// the mailboxes inherit from and that names no account is only their
// template: nil.
func (im *cmoImporter) receivingProfile(s cmoSrc, serverType, name, label, imapPort, pop3Port string, template bool) *cmoProfile {
	p := &cmoProfile{name: name, body: &ymap{}}
	// After the import CMO reads every mailbox over IMAP or POP3.
	sec := "Imap."
	if serverType == "POP3" {
		sec = "Pop3."
	}
	cmoPrefix := "Mail.Receiving." + sec
	if s.own != "" {
		cmoPrefix = strings.TrimSuffix(s.own, "Microsoft365.")
	}
	if serverType == "Microsoft365" {
		if template && !im.hasAccount(s) {
			im.notMapped("%s: it names no account (UserObjectId or AccountName): only what the mailboxes below inherit, no profile of its own", label)
			return nil
		}
		p.head = label + ": ServerType Microsoft365, through Microsoft Graph"
		graph, creds := im.graphMailbox(s, p)
		p.body.set("graph", graph, "")
		imap := &ymap{}
		imap.set("listen", "127.0.0.1:"+imapPort, "")
		p.body.set("imap", imap, "IMAP over the Graph mailbox: no upstream")
		user := im.localUser(name, p.body)
		p.body.set("credentials", creds, "")
		im.listener(name, "imap", "127.0.0.1:"+imapPort, user)
		im.receivingWebConfig(cmoPrefix, "127.0.0.1:"+imapPort, user, name)
		return p
	}
	if template {
		_, login := im.get(s, "Login")
		_, user := im.get(s, "GoogleOAuth2.GsuiteUser")
		if !login && !user {
			im.notMapped("%s: it has no Login: only what the mailboxes below inherit, no profile of its own", label)
			return nil
		}
	}
	proto := strings.ToLower(serverType)
	port := imapPort
	if proto == "pop3" {
		port = pop3Port
	}
	auth := im.choice(s, "AuthType", "BasicAuth", "BasicAuth", "GoogleOAuth2")
	p.head = fmt.Sprintf("%s: ServerType %s, AuthType %s", label, serverType, auth)
	up := im.upstream(s, proto)
	mailbox, creds := im.serverCredentials(s, name, auth, proto)
	p.body.set("mailbox", mailbox.value, mailbox.key)
	l := &ymap{}
	l.set("listen", "127.0.0.1:"+port, "")
	l.set("upstream", up, "")
	p.body.set(proto, l, "")
	user := im.localUser(name, p.body)
	p.body.set("credentials", creds, "")
	im.listener(name, proto, "127.0.0.1:"+port, user)
	im.receivingWebConfig(cmoPrefix, "127.0.0.1:"+port, user, name)
	return p
}

// hasAccount reports whether a Microsoft365 section names its mailbox.
func (im *cmoImporter) hasAccount(s cmoSrc) bool {
	_, c := im.keys.vals[strings.ToLower(s.base+"ConfidentialApp.UserObjectId")]
	_, p := im.keys.vals[strings.ToLower(s.base+"PublicApp.AccountName")]
	return c || p
}

// receivingWebConfig says how CMO logs in to a mailbox's listener: the
// keys under prefix (Mail.Receiving.Imap., Mail.NewAction.EmailClient.).
func (im *cmoImporter) receivingWebConfig(prefix, listen, user, profile string) {
	im.webConfig(im.spell(prefix, "Server"), listen, "")
	im.webConfig(im.spell(prefix, "AuthType"), "BasicAuth", "")
	im.webConfig(im.spell(prefix, "Login"), user, "")
	im.webConfig(im.spell(prefix, "Password"), "…", "the value of "+envName(profile, "LOCAL_PASSWORD"))
}

// signIns lists the Public accounts to sign in once, and says why CMO's
// cache cannot be used.
func (im *cmoImporter) signIns() {
	seen := map[string]string{}
	for _, p := range im.profiles {
		if p.account == "" {
			continue
		}
		if first, ok := seen[strings.ToLower(p.account)]; ok {
			im.note("profile %s signs in as %s too: one mailproxy token add %s serves both", p.name, p.account, first)
			continue
		}
		seen[strings.ToLower(p.account)] = p.name
		im.out.SignIns = append(im.out.SignIns, fmt.Sprintf("mailproxy token add %s    # as %s", p.name, p.account))
	}
	if !im.store {
		if len(im.helper.keys) > 0 {
			im.notMapped("%s: not needed: no Microsoft365 Public app is configured", strings.Join(im.helper.keys, ", "))
		}
		return
	}
	im.note("token_store.path is %s: where mailproxy runs on Windows, write one there, e.g. C:\\ProgramData\\mailproxy\\tokens.enc", cmoTokenStorePath)
	im.notMapped("CMO's MSAL token cache (%s) is not imported: it is encrypted for one Windows machine and user (DPAPI), so each Public account signs in once with mailproxy (mailproxy token add, below)", im.helper.cache)
	if len(im.helper.keys) > 0 {
		im.notMapped("%s: the token helper's and MSAL's settings: mailproxy token add takes the helper's place", strings.Join(im.helper.keys, ", "))
	}
	im.out.Vars = append(im.out.Vars, CMOVar{Name: cmoStoreKeyVar, Kind: CMOStoreKey,
		Holds: "the token store's key, where signed-in accounts are kept: make one with mailproxy key generate"})
}

// leftovers reports the keys nothing read.
func (im *cmoImporter) leftovers() {
	var other []string
	for _, lk := range im.keys.order {
		if im.keys.used[lk] {
			continue
		}
		key := im.keys.vals[lk].key
		if slices.ContainsFunc(cmoMailboxes, func(mb cmoMailbox) bool { return strings.HasPrefix(lk, strings.ToLower(mb.prefix)) }) {
			im.notMapped("%s: not a key a mailbox has (AuthType, GoogleOAuth2.*, Server, Login, Password, Microsoft365.*): CMO takes the rest from Mail.Receiving", key)
			continue
		}
		if strings.HasPrefix(lk, "mail.") || strings.HasPrefix(lk, "msal.") || strings.HasPrefix(lk, "tokenhelper.") {
			im.notMapped("%s: not a CMO mail key: ignored (a typo?)", key)
			continue
		}
		other = append(other, key)
	}
	if len(other) > 0 {
		im.notMapped("%s: not mail settings: left to CMO", strings.Join(other, ", "))
	}
}

// yaml writes the profiles; one that inherits states what differs from
// its parent.
func (im *cmoImporter) yaml() ([]byte, error) {
	if len(im.profiles) == 0 {
		return nil, nil
	}
	root := &ymap{}
	if im.store {
		ts := &ymap{}
		ts.set("path", cmoTokenStorePath, "token add makes the directory")
		ts.set("key", "${env:"+cmoStoreKeyVar+"}", "mailproxy key generate")
		root.set("token_store", ts, "signed-in accounts (Public apps) are kept here, encrypted")
	}
	profiles := &ymap{}
	byName := map[string]*cmoProfile{}
	for _, p := range im.profiles {
		byName[p.name] = p
		body := p.body
		if parent := byName[p.parent]; parent != nil {
			body = &ymap{}
			body.set("inherit", parent.name, "")
			body.entries = append(body.entries, ydiff(parent.body, p.body).entries...)
		}
		profiles.entries = append(profiles.entries, yentry{key: p.name, val: body, head: p.head})
	}
	root.set("profiles", profiles, "")
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root.node()},
		HeadComment: "# mailproxy configuration made by mailproxy config import-cmo from CMO's web.config.\n# Each value's comment names the key it comes from. Check it: mailproxy config validate"}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Report is the import's text for a person: listeners, variables, what to
// change in web.config, sign-ins, what was not mapped, notes, problems.
func (r *CMOImport) Report() string {
	var b strings.Builder
	section := func(title string) { fmt.Fprintf(&b, "\n%s\n", title) }
	if len(r.Listeners) > 0 {
		section("Local listeners (CMO has no such setting; these are defaults: change listen in the YAML and the Server lines below together):")
		w := 0
		for _, l := range r.Listeners {
			w = max(w, len(l.Profile))
		}
		for _, l := range r.Listeners {
			login := "local user " + l.Username
			if l.Username == "" {
				login = "no local login (CMO sends without AUTH)"
			}
			fmt.Fprintf(&b, "  %-*s  %-4s  %s  %s\n", w, l.Profile, l.Proto, l.Listen, login)
		}
	}
	if len(r.Vars) > 0 {
		section("Environment variables the YAML reads (set them for mailproxy serve):")
		w := 0
		for _, v := range r.Vars {
			w = max(w, len(v.Name))
		}
		for _, v := range r.Vars {
			fmt.Fprintf(&b, "  %-*s  %s\n", w, v.Name, v.Holds)
		}
	}
	if len(r.WebConfig) > 0 {
		section("Change in web.config, so that CMO talks to mailproxy:")
		for _, s := range r.WebConfig {
			fmt.Fprintf(&b, "  <add key=%q value=%q />", s.Key, s.Value)
			if s.Comment != "" {
				fmt.Fprintf(&b, "  <!-- %s -->", s.Comment)
			}
			b.WriteString("\n")
		}
	}
	if len(r.SignIns) > 0 {
		section("Sign each Public account in once (a device code by default, which needs \"Allow public client flows\" in the app registration; or -browser, with http://localhost registered as a redirect):")
		for _, s := range r.SignIns {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	for _, l := range []struct {
		title string
		lines []string
	}{
		{"Not mapped:", r.NotMapped},
		{"Notes:", r.Notes},
		{fmt.Sprintf("Problems (%d): the configuration will not run until each is fixed in web.config (then import again):", len(r.Problems)), r.Problems},
	} {
		if len(l.lines) > 0 {
			section(l.title)
			for _, s := range l.lines {
				fmt.Fprintf(&b, "  - %s\n", s)
			}
		}
	}
	return strings.TrimPrefix(b.String(), "\n")
}

// ymap is a YAML mapping in the order written. A value is a string, an
// int, a *ymap, a []*ymap, or nil (null).
type ymap struct{ entries []yentry }

type yentry struct {
	key     string
	val     any
	comment string // after the value
	head    string // above the key
}

func (m *ymap) set(key string, val any, comment string) {
	for i := range m.entries {
		if m.entries[i].key == key {
			m.entries[i].val, m.entries[i].comment = val, comment
			return
		}
	}
	m.entries = append(m.entries, yentry{key: key, val: val, comment: comment})
}

func (m *ymap) lookup(key string) (yentry, bool) {
	for _, e := range m.entries {
		if e.key == key {
			return e, true
		}
	}
	return yentry{}, false
}

// ydiff is what child states beyond parent, for child to inherit from
// parent: mappings merge key by key, anything else is replaced, and what
// the parent has that the child has not is cleared ("" or null).
func ydiff(parent, child *ymap) *ymap {
	out := &ymap{}
	for _, ce := range child.entries {
		pe, ok := parent.lookup(ce.key)
		switch {
		case !ok:
			out.entries = append(out.entries, ce)
		case isYmap(pe.val) && isYmap(ce.val):
			if d := ydiff(pe.val.(*ymap), ce.val.(*ymap)); len(d.entries) > 0 {
				ce.val = d
				out.entries = append(out.entries, ce)
			}
		case !yequal(pe.val, ce.val):
			out.entries = append(out.entries, ce)
		}
	}
	for _, pe := range parent.entries {
		if _, ok := child.lookup(pe.key); !ok {
			var clear any // null
			if _, ok := pe.val.(string); ok {
				clear = ""
			}
			out.entries = append(out.entries, yentry{key: pe.key, val: clear, comment: "set by the parent, not used here"})
		}
	}
	return out
}

func isYmap(v any) bool { _, ok := v.(*ymap); return ok }

// yequal compares values, without their comments.
func yequal(a, b any) bool {
	switch a := a.(type) {
	case *ymap:
		b, ok := b.(*ymap)
		if !ok || len(a.entries) != len(b.entries) {
			return false
		}
		for i := range a.entries {
			if a.entries[i].key != b.entries[i].key || !yequal(a.entries[i].val, b.entries[i].val) {
				return false
			}
		}
		return true
	case []*ymap:
		b, ok := b.([]*ymap)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !yequal(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func (m *ymap) node() *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if len(m.entries) == 0 {
		n.Style = yaml.FlowStyle
	}
	for _, e := range m.entries {
		k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.key}
		if e.head != "" {
			k.HeadComment = "# " + e.head
		}
		v := yvalue(e.val)
		if e.comment != "" {
			if v.Kind == yaml.ScalarNode || v.Style == yaml.FlowStyle {
				v.LineComment = "# " + e.comment
			} else {
				k.LineComment = "# " + e.comment
			}
		}
		n.Content = append(n.Content, k, v)
	}
	return n
}

func yvalue(v any) *yaml.Node {
	switch v := v.(type) {
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
	case *ymap:
		return v.node()
	case []*ymap:
		s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, m := range v {
			s.Content = append(s.Content, m.node())
		}
		return s
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
}
