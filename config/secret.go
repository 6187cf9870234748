package config

import (
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Secret is a value given inline, as ${env:NAME} or as file:/path. It prints
// as "[redacted]" so it cannot reach a log by accident; Value returns it.
type Secret struct {
	ref   string
	value string
}

// NewSecret returns a Secret holding value, as if given inline.
func NewSecret(value string) Secret { return Secret{ref: value, value: value} }

// Value is the resolved secret: empty until Resolve (or Parse, Load) has
// read it.
func (s Secret) Value() string { return s.value }

// IsSet reports whether anything was configured.
func (s Secret) IsSet() bool { return s.ref != "" }

// String never shows the secret.
func (s Secret) String() string {
	if s.ref == "" {
		return ""
	}
	return "[redacted]"
}

// GoString keeps %#v from printing the secret too.
func (s Secret) GoString() string { return s.String() }

// UnmarshalYAML keeps the reference; resolve reads it.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a secret is a string: inline, ${env:NAME} or file:/path", n.Line)
	}
	s.ref = n.Value
	return nil
}

// MarshalYAML writes the reference back, never a resolved value.
func (s Secret) MarshalYAML() (any, error) { return s.ref, nil }

// isRef reports whether the secret is read from elsewhere (${env:NAME} or
// file:/path) rather than given inline.
func (s Secret) isRef() bool {
	return (strings.HasPrefix(s.ref, "${env:") && strings.HasSuffix(s.ref, "}")) || strings.HasPrefix(s.ref, "file:")
}

// resolve reads an ${env:NAME} or file:/path reference.
func (s *Secret) resolve() error {
	ref := s.ref
	switch {
	case strings.HasPrefix(ref, "${env:") && strings.HasSuffix(ref, "}"):
		name := ref[len("${env:") : len(ref)-1]
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return fmt.Errorf("environment variable %s is not set: export it or use file:/path", name)
		}
		s.value = v
	case strings.HasPrefix(ref, "file:"):
		path := strings.TrimPrefix(ref, "file:")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cannot read secret file: %w", err)
		}
		s.value = strings.TrimRight(string(b), "\r\n")
		if s.value == "" {
			return fmt.Errorf("secret file %s is empty", path)
		}
	default:
		s.value = ref
	}
	return nil
}
