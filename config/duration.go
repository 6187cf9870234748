package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a length of time written as a Go duration string: "30s",
// "2m", "1h30m". A bare number is refused, since its unit would be a guess.
type Duration time.Duration

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String is the duration as it would be written in the file.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &durationError{line: n.Line, column: n.Column}
	}
	if n.ShortTag() != "!!str" {
		return &durationError{line: n.Line, column: n.Column, value: n.Value}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &durationError{line: n.Line, column: n.Column, value: n.Value}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string, as it is read.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// durationError is a value that is not a duration. Decode turns it into a
// Problem at the key it is written under.
type durationError struct {
	line, column int
	value        string
}

func (e *durationError) msg() string {
	const how = `write it with a unit, e.g. "30s", "2m" or "1h30m"`
	if e.value == "" {
		return "not a duration: " + how
	}
	return fmt.Sprintf("%q is not a duration: %s", e.value, how)
}

func (e *durationError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg()) }
