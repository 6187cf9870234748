package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

type yamlBlock struct {
	line int // README line of the opening fence
	text string
}

// yamlBlocks are the fenced blocks of markdown that open with ```yaml.
func yamlBlocks(markdown string) []yamlBlock {
	var out []yamlBlock
	var cur *yamlBlock
	var indent string
	for i, l := range strings.Split(markdown, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```yaml"):
			cur = &yamlBlock{line: i + 1}
			indent = l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(l, indent) + "\n"
		}
	}
	return out
}

var wholeConfig = regexp.MustCompile(`(?m)^profiles:`)

// The README's examples must be configurations mailproxy accepts. Only
// Decode: they name files and variables that do not exist here.
func TestREADMEExamplesDecode(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlocks(string(data))
	if len(blocks) == 0 {
		t.Fatal("no ```yaml block in README.md")
	}
	for _, b := range blocks {
		if !wholeConfig.MatchString(b.text) {
			t.Logf("README.md line %d: skipped, not a whole configuration (no profiles:)", b.line)
			continue
		}
		if _, err := Decode([]byte(b.text)); err != nil {
			t.Errorf("README.md: the yaml block at line %d (its line 1 is README line %d) does not decode:\n%v", b.line, b.line+1, err)
		}
	}
}

func TestYAMLBlocks(t *testing.T) {
	got := yamlBlocks("text\n```yaml\na: 1\n```\n```sh\nls\n```\n  ```yaml\n  b: 2\n  ```\n")
	if len(got) != 2 || got[0] != (yamlBlock{2, "a: 1\n"}) || got[1] != (yamlBlock{8, "b: 2\n"}) {
		t.Fatalf("%+v", got)
	}
}
