package main

import (
	"flag"
	"fmt"
	"io"

	"mailproxy/config"
)

func cmdConfig(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "validate" {
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
	fmt.Fprintf(stdout, "%s: ok, %d profile(s): %v\n", path, len(cfg.Profiles), cfg.ProfileNames())
	return nil
}
