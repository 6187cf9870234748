package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"mailproxy/app"
	"mailproxy/config"
	"mailproxy/tokens"
)

// cmdToken runs token add, list and remove.
func cmdToken(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "add":
		return cmdTokenAdd(ctx, args[1:], stdin, stdout, stderr)
	case "list":
		return cmdTokenList(ctx, args[1:], stdout, stderr)
	case "remove":
		return cmdTokenRemove(ctx, args[1:], stdout, stderr)
	}
	return errUsage
}

// delegatedProfile builds the configuration and returns the profile's
// delegated credential.
func delegatedProfile(ctx context.Context, cfg *config.Config, name string, stderr io.Writer) (*app.App, tokens.Delegated, error) {
	a, err := loadApp(ctx, cfg, name, stderr)
	if err != nil {
		return nil, nil, err
	}
	d := a.Delegated(name)
	if d == nil {
		return nil, nil, fmt.Errorf("profile %q: credentials type %s gets its tokens without a person; token add is for microsoft365 with app: public and oauth2 with grant: refresh_token", name, cfg.Profiles[name].Credentials.Type)
	}
	return a, d, nil
}

// loadForSignIn loads the configuration for token add: the token store's
// directory is made (mode 0700) if it is missing, and must be writable,
// before anyone signs in.
func loadForSignIn(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := config.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if ts := cfg.TokenStore; ts != nil && ts.Path != "" {
		if err := config.EnsureStoreDir(ts.Path); err != nil {
			return nil, fmt.Errorf("token_store.path: %w", err)
		}
	}
	if err := cfg.Resolve(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func cmdTokenAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("token add", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	device := fs.Bool("device", false, "sign in with a device code (works over SSH and in containers)")
	browser := fs.Bool("browser", false, "sign in with a browser on this machine (loopback redirect)")
	paste := fs.Bool("paste", false, "sign in with any browser, then paste the address it ends on")
	account := fs.String("account", "", "the account to sign in (default: the profile's)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return errUsage
	}
	name := fs.Arg(0)
	cfg, err := loadForSignIn(configPath(*cfgPath))
	if err != nil {
		return err
	}
	a, d, err := delegatedProfile(ctx, cfg, name, stderr)
	if err != nil {
		return err
	}
	defer closeApp(ctx, a, &err)
	cr := cfg.Profiles[name].Credentials
	method := "browser"
	switch {
	case *device:
		method = "device"
	case *paste:
		method = "paste"
	case *browser:
	case cr.Type == config.CredMicrosoft365 || cr.DeviceURL != "":
		method = "device"
	}
	in := bufio.NewReader(stdin)
	acct := cmp.Or(*account, cr.Account)
	for {
		fmt.Fprintf(stdout, "Signing in %s for profile %q (%s sign-in).\n", acct, name, method)
		who, err := signIn(ctx, d, method, acct, cr.RedirectURL, in, stdout)
		if err != nil {
			return fmt.Errorf("profile %q: sign-in failed: %w", name, err)
		}
		fmt.Fprintf(stdout, "Signed in as %s; the grant is saved in %s.\n", who, cfg.TokenStore.Where())
		if !strings.EqualFold(who, cr.Account) {
			fmt.Fprintf(stdout, "Note: profile %q uses %s; a profile with credentials.account: %s uses this one.\n", name, cr.Account, who)
		}
		fmt.Fprint(stdout, "Add another account? [y/N] ")
		line, _ := in.ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			fmt.Fprintln(stdout)
			return nil
		}
		fmt.Fprint(stdout, "Account (e-mail address): ")
		line, _ = in.ReadString('\n')
		acct = strings.TrimSpace(line)
		if acct == "" {
			return errors.New("no account given")
		}
	}
}

func signIn(ctx context.Context, d tokens.Delegated, method, account, redirect string, in *bufio.Reader, out io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	switch method {
	case "device":
		da, err := d.DeviceCode(ctx, account)
		if err != nil {
			return "", err
		}
		if da.Message != "" {
			fmt.Fprintln(out, da.Message)
		} else {
			fmt.Fprintf(out, "To sign in, open %s in any browser and enter the code %s\n", da.VerificationURI, da.UserCode)
		}
		fmt.Fprintf(out, "Waiting for the sign-in (the code expires at %s)...\n", da.Expires.Local().Format("15:04"))
		return da.Wait(ctx)
	case "paste":
		return tokens.PasteSignIn(ctx, d, account, redirect, func(u string) {
			fmt.Fprintf(out, "Open this address in a browser and sign in as %s:\n\n  %s\n\n", account, u)
		}, func() (string, error) {
			fmt.Fprint(out, "Then paste the address the browser ended on (it holds code=...): ")
			return in.ReadString('\n')
		})
	default:
		return tokens.BrowserSignIn(ctx, d, account, redirect, func(u string) {
			fmt.Fprintf(out, "Open this address in a browser on this machine and sign in as %s:\n\n  %s\n\nWaiting for the browser to come back...\n", account, u)
		})
	}
}

func cmdTokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token list", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	cfg, err := config.Load(configPath(*cfgPath))
	if err != nil {
		return err
	}
	a, err := loadApp(ctx, cfg, "", stderr)
	if err != nil {
		return err
	}
	defer a.Close(ctx)
	if a.Vault() == nil {
		return errors.New("no token_store in the configuration: nothing is stored")
	}
	keys, entries, err := a.Vault().Accounts(ctx)
	if err != nil {
		return err
	}
	users := map[string][]string{} // store key -> profiles
	for _, name := range cfg.ProfileNames() {
		if d := a.Delegated(name); d != nil {
			k := d.Key(cfg.Profiles[name].Credentials.Account)
			users[k] = append(users[k], name)
			if _, ok := entries[k]; !ok {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	keys = slices.Compact(keys)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tPROFILES\tPROVIDER\tSCOPES\tEXPIRES\tLAST REFRESH\tLAST ERROR")
	for _, k := range keys {
		e, ok := entries[k]
		profiles := strings.Join(users[k], ",")
		if !ok {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\tnot signed in: run mailproxy token add %s\n", k, profiles, users[k][0])
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k, cmp.Or(profiles, "-"), cmp.Or(e.Provider, "-"),
			cmp.Or(strings.Join(e.Scopes, " "), "-"), when(e.Expiry), when(e.Updated), cmp.Or(e.LastError, "-"))
	}
	return tw.Flush()
}

func cmdTokenRemove(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("token remove", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	account := fs.String("account", "", "the account to forget (default: the profile's)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return errUsage
	}
	name := fs.Arg(0)
	cfg, err := config.Load(configPath(*cfgPath))
	if err != nil {
		return err
	}
	a, d, err := delegatedProfile(ctx, cfg, name, stderr)
	if err != nil {
		return err
	}
	defer closeApp(ctx, a, &err)
	acct := cmp.Or(*account, cfg.Profiles[name].Credentials.Account)
	gone, err := d.Remove(ctx, acct)
	if err != nil {
		return fmt.Errorf("profile %q: %w", name, err)
	}
	if !gone {
		return fmt.Errorf("profile %q: %s has no stored grant", name, acct)
	}
	fmt.Fprintf(stdout, "Removed %s from %s. The provider still knows the grant: revoke it there too if it was compromised.\n", acct, cfg.TokenStore.Where())
	return nil
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}
