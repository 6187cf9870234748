package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"mailproxy/config"
	"mailproxy/tokens"
)

// cmdImportCMO runs config import-cmo: a CMO web.config becomes a mailproxy
// configuration on stdout (or -o FILE); the variables to set, what to
// change in web.config, what could not be mapped and the problems go to
// stderr. A problem makes it fail: the configuration would not run.
func cmdImportCMO(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config import-cmo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the configuration to `FILE` (mode 0600) instead of stdout")
	envFile := fs.String("env", "", "write the variables the configuration reads to `FILE` (mode 0600): web.config's secrets, and new local passwords and store key")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return errUsage
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	imp, err := config.ImportCMO(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if imp.YAML != nil {
		if *out == "" {
			if _, err := stdout.Write(imp.YAML); err != nil {
				return err
			}
		} else if err := writePrivate(*out, imp.YAML); err != nil {
			return err
		}
	}
	fmt.Fprint(stderr, imp.Report())
	if *out != "" && imp.YAML != nil {
		fmt.Fprintf(stderr, "\nWrote the configuration to %s; check it with mailproxy config validate -config %s\n", *out, *out)
	}
	if *envFile != "" && len(imp.Vars) > 0 {
		text, handMade := envText(imp.Vars)
		if err := writePrivate(*envFile, []byte(text)); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "\nWrote the variables to %s (systemd EnvironmentFile=, or set -a; . %s): its local passwords and store key are new; give CMO the local passwords as above", *envFile, *envFile)
		if len(handMade) > 0 {
			fmt.Fprintf(stderr, "; set %s by hand (a quote or a line break in the value)", strings.Join(handMade, ", "))
		}
		fmt.Fprintln(stderr)
	}
	if n := len(imp.Problems); n > 0 {
		return fmt.Errorf("%s: %d problem(s), listed above: the configuration will not run", path, n)
	}
	return nil
}

// envText is an environment file of vars: web.config's secrets, and new
// local passwords and store key. Values are single-quoted, which systemd
// and the shell both read as they are; a value that cannot be is left for
// a person to set (handMade).
func envText(vars []config.CMOVar) (text string, handMade []string) {
	var b strings.Builder
	b.WriteString("# Made by mailproxy config import-cmo. It holds secrets: keep it mode 0600.\n")
	for _, v := range vars {
		var value string
		switch v.Kind {
		case config.CMOFromWebConfig:
			value = v.Value.Value()
		case config.CMOLocalPassword:
			value = newPassword()
		case config.CMOStoreKey:
			value = tokens.NewKey()
		}
		fmt.Fprintf(&b, "\n# %s\n", v.Holds)
		if strings.ContainsAny(value, "'\n\r") {
			handMade = append(handMade, v.Name)
			fmt.Fprintf(&b, "# %s=  (set it by hand: its value has a quote or a line break)\n", v.Name)
			continue
		}
		fmt.Fprintf(&b, "%s='%s'\n", v.Name, value)
	}
	return b.String(), handMade
}

// newPassword is a random local password: 24 characters, URL-safe.
func newPassword() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// writePrivate writes data to path with mode 0600, also when the file
// exists with another mode.
func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
