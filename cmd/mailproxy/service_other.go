//go:build !windows

package main

import (
	"context"
	"errors"
	"io"
)

// errServiceWindowsOnly is what mailproxy service says where it does not exist.
var errServiceWindowsOnly = errors.New(`service: only on Windows (it installs mailproxy as a Windows service); on Linux, run mailproxy serve under systemd with deploy/systemd/mailproxy.service (README "Running as a systemd service"), elsewhere under the system's service manager`)

func cmdService(context.Context, []string, io.Writer) error { return errServiceWindowsOnly }
