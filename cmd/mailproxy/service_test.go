package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

func TestParseServiceArgs(t *testing.T) {
	const def = `C:\ProgramData\mailproxy\mailproxy.yaml`
	for _, c := range []struct {
		args []string
		want serviceOptions
	}{
		{[]string{"install"}, serviceOptions{action: "install", config: def}},
		{[]string{"install", "-config", `D:\mp\m.yaml`, "-log", `D:\mp\mailproxy.log`}, serviceOptions{"install", `D:\mp\m.yaml`, `D:\mp\mailproxy.log`}},
		{[]string{"install", "-config=x.yaml"}, serviceOptions{action: "install", config: "x.yaml"}},
		{[]string{"run", "-config", "x.yaml"}, serviceOptions{action: "run", config: "x.yaml"}},
		{[]string{"uninstall"}, serviceOptions{action: "uninstall"}},
		{[]string{"start"}, serviceOptions{action: "start"}},
		{[]string{"stop"}, serviceOptions{action: "stop"}},
	} {
		got, err := parseServiceArgs(c.args, def)
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
	for _, bad := range [][]string{
		nil,
		{"restart"},
		{"install", "extra"},
		{"install", "-config"},
		{"install", "-config", ""},
		{"install", "-bogus"},
		{"start", "-config", "x.yaml"},
		{"stop", "now"},
		{"uninstall", "-log", "x"},
		{"-config", "x.yaml", "install"},
	} {
		if _, err := parseServiceArgs(bad, def); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want the usage", bad, err)
		}
	}
}

// What install registers is what run parses back.
func TestServiceRunArgsRoundTrip(t *testing.T) {
	for _, o := range []serviceOptions{
		{action: "install", config: `C:\Program Files\mailproxy\my config.yaml`},
		{action: "install", config: `C:\ProgramData\mailproxy\mailproxy.yaml`, logFile: `C:\ProgramData\mailproxy\mailproxy.log`},
	} {
		args := o.runArgs()
		if args[0] != "service" || args[1] != "run" {
			t.Fatalf("%q", args)
		}
		got, err := parseServiceArgs(args[1:], "unused")
		want := o
		want.action = "run"
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", args, got, err, want)
		}
	}
}

func TestServiceSID(t *testing.T) {
	// Windows's own: NT SERVICE\TrustedInstaller.
	if got, want := serviceSID("TrustedInstaller"), "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if serviceSID("mailproxy") != serviceSID("MailProxy") {
		t.Error("service names are not case-sensitive")
	}
	if !strings.HasPrefix(serviceSID(serviceName), "S-1-5-80-") || strings.Count(serviceSID(serviceName), "-") != 8 {
		t.Errorf("%s", serviceSID(serviceName))
	}
}

func TestDataDirSDDL(t *testing.T) {
	got := dataDirSDDL("S-1-5-80-1-2-3-4-5")
	want := "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;S-1-5-80-1-2-3-4-5)"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// The event log gets each record at its level, in either log format.
func TestRecordLevel(t *testing.T) {
	for _, json := range []bool{false, true} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
		if json {
			h = slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
		}
		log := slog.New(h)
		for _, c := range []struct {
			level slog.Level
			want  string
		}{{slog.LevelDebug, "DEBUG"}, {slog.LevelInfo, "INFO"}, {slog.LevelWarn, "WARN"}, {slog.LevelError, "ERROR"}} {
			buf.Reset()
			log.Log(context.Background(), c.level, "a message saying level=ERROR", "note", "level=ERROR")
			if got := recordLevel(buf.String()); got != c.want {
				t.Errorf("json %v: %q: %s, want %s", json, buf.String(), got, c.want)
			}
		}
	}
	if got := recordLevel("panic: something"); got != "" {
		t.Errorf("%q", got)
	}
}

func TestServiceElsewhereSaysWindowsOnly(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the service exists here")
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"service", "install"}, nil, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "only on Windows") || !strings.Contains(stderr.String(), "deploy/systemd/mailproxy.service") {
		t.Errorf("stderr: %s", stderr.String())
	}
}
