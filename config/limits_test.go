package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// withSettings is a valid configuration with top-level keys top and keys
// under profiles.a.smtp.upstream upstream.
func withSettings(top, upstream string) string {
	return fmt.Sprintf(`%s
profiles:
  a:
    mailbox: a@x
    smtp:
      listen: "2525"
      local_auth: none
      upstream:
        host: h
        %s
    credentials: {type: basic, password: pw}
`, top, upstream)
}

func TestLimitsShutdownGraceAndUpstreamTimeoutDefaults(t *testing.T) {
	cfg, err := Decode([]byte(withSettings("", "")))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.Connections != 0 || l.ConnectionsPerAddress != 100 || l.LoginTimeout.D() != 2*time.Minute || l.FailedLogins != 30 {
		t.Errorf("limits defaults: %+v", l)
	}
	if cfg.ShutdownGrace.D() != 30*time.Second {
		t.Errorf("shutdown_grace default: %v", cfg.ShutdownGrace)
	}
	if d := cfg.Profiles["a"].SMTP.Upstream.Timeout.D(); d != 2*time.Minute {
		t.Errorf("smtp.upstream.timeout default: %v", d)
	}

	cfg, err = Decode([]byte(withSettings(`limits: {connections: 64, connections_per_address: 8, login_timeout: 1h, failed_logins: 1}
shutdown_grace: 1m30s`, "timeout: 45s")))
	if err != nil {
		t.Fatal(err)
	}
	l = cfg.Limits
	if l.Connections != 64 || l.ConnectionsPerAddress != 8 || l.LoginTimeout.D() != time.Hour || l.FailedLogins != 1 {
		t.Errorf("limits: %+v", l)
	}
	if cfg.ShutdownGrace.D() != 90*time.Second || cfg.Profiles["a"].SMTP.Upstream.Timeout.D() != 45*time.Second {
		t.Errorf("shutdown_grace %v, timeout %v", cfg.ShutdownGrace, cfg.Profiles["a"].SMTP.Upstream.Timeout)
	}
}

func TestLimitsShutdownGraceAndUpstreamTimeoutInvalid(t *testing.T) {
	for _, tc := range []struct {
		top, upstream, want string
	}{
		{"limits: {connections: -1}", "", "line 1: limits.connections: must be 0 (a share of the open-file limit) or more"},
		{"limits: {connections_per_address: -5}", "", "line 1: limits.connections_per_address: must be positive"},
		{"limits: {login_timeout: 61m}", "", "line 1: limits.login_timeout: 1h1m is out of range: give more than 0s and at most 1h"},
		{"limits: {login_timeout: -1s}", "", "limits.login_timeout: -1s is out of range"},
		{"limits: {login_timeout: 30}", "", `line 1: limits.login_timeout: "30" is not a duration: write it with a unit, e.g. "30s"`},
		{"limits: {login_timeout: \"30\"}", "", `limits.login_timeout: "30" is not a duration`},
		{"limits: {login_timeout: soon}", "", `limits.login_timeout: "soon" is not a duration`},
		{"limits: {login_timeout: [1m]}", "", `limits.login_timeout: not a duration: write it with a unit`},
		{"limits: {failed_logins: -1}", "", "line 1: limits.failed_logins: must be 1 or more"},
		{"shutdown_grace: 10m1s", "", "line 1: shutdown_grace: 10m1s is out of range: give more than 0s and at most 10m"},
		{"shutdown_grace: 30", "", `shutdown_grace: "30" is not a duration`},
		{"", "timeout: 31m", "line 10: profiles.a.smtp.upstream.timeout: 31m is out of range: give more than 0s and at most 30m"},
		{"", "timeout: -2m", "profiles.a.smtp.upstream.timeout: -2m is out of range"},
		{"", "timeout: 120", `line 10: profiles.a.smtp.upstream.timeout: "120" is not a duration`},
	} {
		doc := withSettings(tc.top, tc.upstream)
		_, err := Decode([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s%s: %v, want %q", tc.top, tc.upstream, err, tc.want)
		}
	}
}

func TestDurationReadsGoDurations(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "2m": 2 * time.Minute, "1h30m": 90 * time.Minute, `"250ms"`: 250 * time.Millisecond} {
		if err := yaml.Unmarshal([]byte("d: "+in), &v); err != nil || v.D.D() != want {
			t.Errorf("%s: %v %v, want %v", in, v.D, err, want)
		}
	}
	for _, in := range []string{"30", "1.5", "true", "{}", "30 s"} {
		if err := yaml.Unmarshal([]byte("d: "+in), &v); err == nil || !strings.Contains(err.Error(), `write it with a unit, e.g. "30s"`) {
			t.Errorf("%s: %v", in, err)
		}
	}
}
