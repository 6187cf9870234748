package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"mailproxy/config"
)

// cmdConfigShow runs config show: each profile (or one) as it is in
// force, after inheritance and defaults, with where each value comes from
// and inline secrets masked. It reads no secret: references stay as
// written.
func cmdConfigShow(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config show", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 {
		return errUsage
	}
	path := configPath(*cfgPath)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg, err := config.Decode(data)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	names := cfg.ProfileNames()
	if fs.NArg() == 1 {
		names = []string{fs.Arg(0)}
	}
	for i, name := range names {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := cfg.Show(stdout, name); err != nil {
			return err
		}
	}
	return nil
}
