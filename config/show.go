package config

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Show writes profile name as it is in force, after inheritance and
// defaults, each value with where it comes from: the profile's own line,
// the line of the profile it inherits it from, or a default. A secret
// given inline shows as [redacted]; a reference (${env:…}, file:…) as
// written.
func (c *Config) Show(w io.Writer, name string) error {
	p := c.Profiles[name]
	if p == nil {
		return fmt.Errorf("no profile %q (profiles: %s)", name, strings.Join(c.ProfileNames(), ", "))
	}
	shown := masked(reflect.ValueOf(*p)).Interface().(Profile)
	var node yaml.Node
	if err := node.Encode(shown); err != nil {
		return err
	}
	c.annotate(&node, "profiles."+name)
	head := fmt.Sprintf("# profile %s", name)
	if p.Inherit != "" {
		head += fmt.Sprintf(" (inherits %s)", p.Inherit)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: name, HeadComment: head}, &node}}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// annotate drops what is neither written nor set (zero values nobody
// chose) and says of each value where it comes from.
func (c *Config) annotate(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := path + "." + k.Value
			c.annotate(v, p)
			if empty(v) {
				if _, written := c.lines[p]; !written {
					continue
				}
			}
			if v.Kind == yaml.ScalarNode {
				v.LineComment = c.origin(p)
			}
			keep = append(keep, k, v)
		}
		n.Content = keep
	case yaml.SequenceNode:
		for i, item := range n.Content {
			c.annotate(item, fmt.Sprintf("%s[%d]", path, i))
			if item.Kind == yaml.ScalarNode {
				item.LineComment = c.origin(fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}

func empty(v *yaml.Node) bool {
	switch v.Kind {
	case yaml.ScalarNode:
		return v.Value == "" || v.Value == "0" || v.Value == "false" || v.Tag == "!!null" || v.Value == "0s"
	case yaml.MappingNode, yaml.SequenceNode:
		return len(v.Content) == 0
	}
	return false
}

// origin says where the value at path comes from.
func (c *Config) origin(path string) string {
	line, ok := c.lines[path]
	if !ok {
		return "default"
	}
	own, _, _ := strings.Cut(strings.TrimPrefix(path, "profiles."), ".")
	if from := c.profileOf(line); from != "" && from != own {
		return fmt.Sprintf("inherited from %s, line %d", from, line)
	}
	return fmt.Sprintf("line %d", line)
}

// profileOf is the profile whose block holds line.
func (c *Config) profileOf(line int) string {
	type at struct {
		name string
		line int
	}
	var starts []at
	for n, l := range c.profileAt {
		starts = append(starts, at{n, l})
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].line < starts[j].line })
	name := ""
	for _, s := range starts {
		if s.line <= line {
			name = s.name
		}
	}
	return name
}

// profileLines maps each profile to the line its name is written on.
func profileLines(doc *yaml.Node) map[string]int {
	out := map[string]int{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return out
	}
	if profiles := mappingValue(deref(doc.Content[0]), "profiles"); profiles != nil && profiles.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(profiles.Content); i += 2 {
			out[profiles.Content[i].Value] = profiles.Content[i].Line
		}
	}
	return out
}

var secretType = reflect.TypeOf(Secret{})

// masked is a copy of v with every Secret given inline shown as
// [redacted].
func masked(v reflect.Value) reflect.Value {
	switch {
	case v.Type() == secretType:
		s := v.Interface().(Secret)
		if s.IsSet() && !s.isRef() {
			s = Secret{ref: "[redacted]"}
		}
		return reflect.ValueOf(s)
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(masked(v.Elem()))
		return out
	case v.Kind() == reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if out.Field(i).CanSet() {
				out.Field(i).Set(masked(v.Field(i)))
			}
		}
		return out
	case v.Kind() == reflect.Slice && !v.IsNil():
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(masked(v.Index(i)))
		}
		return out
	case v.Kind() == reflect.Map && !v.IsNil():
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for _, k := range v.MapKeys() {
			out.SetMapIndex(k, masked(v.MapIndex(k)))
		}
		return out
	}
	return v
}
