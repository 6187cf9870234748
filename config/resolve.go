package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// storeKeySize is the length of token_store.key, decoded (AES-256).
const storeKeySize = 32

// Resolve reads every secret reference (${env:NAME}, file:/path, or the
// inline value) and checks that every file the configuration names exists,
// that token_store.key is a store key and that the token store's directory
// may be written. It returns every problem joined, each with its key path
// (and line). Decode does not resolve; Parse and Load do.
func (c *Config) Resolve() error {
	ps := problems{lines: c.lines}
	c.resolve(&ps)
	return ps.err()
}

type secretAt struct {
	path string
	s    *Secret
}

type fileAt struct{ path, file string }

// references lists every secret and file of the configuration with its key
// path, in the order of the file's documentation.
func (c *Config) references() ([]secretAt, []fileAt) {
	var secrets []secretAt
	var files []fileAt
	tls := func(at string, t *LocalTLS) {
		if t != nil {
			files = append(files, fileAt{at + ".cert_file", t.CertFile}, fileAt{at + ".key_file", t.KeyFile})
		}
	}
	if ts := c.TokenStore; ts != nil {
		secrets = append(secrets, secretAt{"token_store.key", &ts.Key}, secretAt{"token_store.postgres", &ts.Postgres})
	}
	if a := c.Admin; a != nil {
		secrets = append(secrets, secretAt{"admin.password", &a.Password}, secretAt{"admin.token", &a.Token})
		tls("admin.tls", a.TLS)
	}
	secrets = append(secrets, secretAt{"alerts.webhook_url", &c.Alerts.WebhookURL})
	for _, name := range c.ProfileNames() {
		p := c.Profiles[name]
		at := "profiles." + name
		if s := p.SMTP; s != nil {
			tls(at+".smtp.tls", s.TLS)
			files = append(files, fileAt{at + ".smtp.upstream.ca_file", s.Upstream.CAFile})
		}
		if g := p.Graph; g != nil {
			files = append(files, fileAt{at + ".graph.ca_file", g.CAFile})
		}
		for _, r := range []struct {
			at  string
			rcv *Receiving
		}{{at + ".imap", p.IMAP}, {at + ".pop3", p.POP3.receiving()}} {
			if r.rcv != nil {
				tls(r.at+".tls", r.rcv.TLS)
				files = append(files, fileAt{r.at + ".upstream.ca_file", r.rcv.Upstream.CAFile})
			}
		}
		for i := range p.LocalUsers {
			secrets = append(secrets, secretAt{fmt.Sprintf("%s.local_users[%d].password", at, i), &p.LocalUsers[i].Password})
		}
		cr, ca := &p.Credentials, at+".credentials"
		secrets = append(secrets,
			secretAt{ca + ".client_secret", &cr.ClientSecret},
			secretAt{ca + ".certificate_password", &cr.CertificatePassword},
			secretAt{ca + ".refresh_token", &cr.RefreshToken},
			secretAt{ca + ".password", &cr.Password})
		files = append(files, fileAt{ca + ".certificate_file", cr.CertificateFile}, fileAt{ca + ".key_file", cr.KeyFile})
	}
	return secrets, files
}

func (c *Config) resolve(ps *problems) {
	secrets, files := c.references()
	failed := map[*Secret]bool{}
	for _, r := range secrets {
		if !r.s.IsSet() {
			continue
		}
		if err := r.s.resolve(); err != nil {
			ps.add(r.path, "%v", err)
			failed[r.s] = true
		}
	}
	for _, f := range files {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			ps.add(f.path, "cannot read %s: %v", f.file, errors.Unwrap(err))
		}
	}
	if ts := c.TokenStore; ts != nil {
		if ts.Key.IsSet() && !failed[&ts.Key] {
			if why := storeKeyProblem(ts.Key.Value()); why != "" {
				ps.add("token_store.key", "must be 32 random bytes, base64 encoded: make one with mailproxy key generate (%s)", why)
			}
		}
		if ts.Path != "" {
			if err := CheckStoreDir(ts.Path); err != nil {
				ps.add("token_store.path", "%v", err)
			}
		}
	}
	// An inline URL was checked by Validate.
	if u := &c.Alerts.WebhookURL; u.IsSet() && u.isRef() && !failed[u] {
		checkWebhookURL(ps, u.Value())
	}
}

// storeKeyProblem says what is wrong with a store key, or "".
func storeKeyProblem(key string) string {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	switch {
	case err != nil:
		return "this one is not base64"
	case len(b) != storeKeySize:
		return fmt.Sprintf("this one is %d bytes", len(b))
	}
	return ""
}

// CheckStoreDir checks that the directory of the token store file at path
// exists and that files can be created in it: it creates one and removes it.
func CheckStoreDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: create it (mode 0700)", dir)
	case err != nil:
		return fmt.Errorf("cannot write in %s: %w", dir, pathCause(err))
	case !fi.IsDir():
		return fmt.Errorf("cannot write in %s: not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".mailproxy-probe-*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, pathCause(err))
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, pathCause(err))
	}
	return nil
}

// EnsureStoreDir creates the directory of the token store file at path if
// it is missing (mode 0700, parents included), then checks it as
// CheckStoreDir does.
func EnsureStoreDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create directory %s: %w", dir, pathCause(err))
	}
	return CheckStoreDir(path)
}

// pathCause drops an fs.PathError's operation and path, which the message
// around it already names.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
