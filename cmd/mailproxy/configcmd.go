package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"mailproxy/app"
	"mailproxy/config"
)

// cmdConfig runs config validate: everything serve would refuse before it
// binds a port is reported (the file, secrets, certificates, keys, the
// token store), with no network call; config show and config import-cmo.
func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "validate":
	case "import-cmo":
		return cmdImportCMO(args[1:], stdout, stderr)
	case "show":
		return cmdConfigShow(args[1:], stdout)
	default:
		return errUsage
	}
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	path := configPath(*cfgPath)
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, app.Options{})
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	a.Close(ctx)
	fmt.Fprintf(stdout, "%s: ok, %d profile(s): %v\n", path, len(cfg.Profiles), cfg.ProfileNames())
	return nil
}
