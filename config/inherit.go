package config

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// inherit overlays each profile that says inherit: P on P's mapping,
// recursively, in the document's node tree. Nodes are copied, never
// re-marshalled, so every value keeps the line it is written on: an
// inherited one points at the parent's line.
func inherit(doc *yaml.Node) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	root := copyMapping(doc.Content[0])
	if root == nil {
		return nil
	}
	doc.Content[0] = root
	var profiles *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "profiles" {
			profiles = copyMapping(root.Content[i+1])
			if profiles == nil {
				return nil
			}
			root.Content[i+1] = profiles
		}
	}
	if profiles == nil {
		return nil
	}
	var names []string
	at := map[string]int{} // name -> index of its value in profiles.Content
	for i := 0; i+1 < len(profiles.Content); i += 2 {
		name := profiles.Content[i].Value
		names = append(names, name)
		at[name] = i + 1
	}
	ps := problems{}
	done := map[string]*yaml.Node{}
	var resolve func(name string, chain []string) *yaml.Node
	resolve = func(name string, chain []string) *yaml.Node {
		if n, ok := done[name]; ok {
			return n
		}
		p := flatten(deref(profiles.Content[at[name]]))
		v := mappingValue(p, "inherit")
		if v == nil || v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" || v.Value == "" {
			done[name] = p
			return p
		}
		parent := v.Value
		path := "profiles." + name + ".inherit"
		chain = append(chain, name)
		if i := slices.Index(chain, parent); i >= 0 {
			ps.addAt(path, v.Line, "cycle %s -> %s", strings.Join(chain[i:], " -> "), parent)
			done[name] = p
			return p
		}
		if _, ok := at[parent]; !ok {
			ps.addAt(path, v.Line, "no profile named %q", parent)
			done[name] = p
			return p
		}
		merged := overlay(resolve(parent, chain), p)
		done[name] = merged
		return merged
	}
	for _, name := range names {
		profiles.Content[at[name]] = resolve(name, nil)
	}
	return ps.err()
}

// overlay returns base overlaid with over: mappings merge key by key,
// recursively; anything else (scalars, sequences, null) is replaced. Neither
// is changed; the result shares their nodes.
func overlay(base, over *yaml.Node) *yaml.Node {
	base, over = deref(base), deref(over)
	if base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode {
		return over
	}
	base, over = flatten(base), flatten(over)
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: over.Style, Line: over.Line, Column: over.Column}
	at := map[string]int{}
	for i := 0; i+1 < len(base.Content); i += 2 {
		at[base.Content[i].Value] = len(out.Content)
		out.Content = append(out.Content, base.Content[i], base.Content[i+1])
	}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		if j, ok := at[k.Value]; ok {
			out.Content[j], out.Content[j+1] = k, overlay(out.Content[j+1], v)
			continue
		}
		out.Content = append(out.Content, k, v)
	}
	return out
}

// deref follows an alias to its anchor.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// copyMapping returns a copy of the mapping n (alias followed, merge keys
// applied) whose entries may be replaced without changing n; nil if n is
// not a mapping.
func copyMapping(n *yaml.Node) *yaml.Node {
	n = flatten(deref(n))
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	c := *n
	c.Content = slices.Clone(n.Content)
	return &c
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// flatten applies a mapping's merge keys (<<: *anchor) the way decoding
// does: the mapping's own keys win, then earlier merged mappings over later
// ones. A mapping without merge keys is returned as it is.
func flatten(n *yaml.Node) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return n
	}
	if !slices.ContainsFunc(n.Content, isMergeKey) {
		return n
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: n.Style, Line: n.Line, Column: n.Column}
	seen := map[string]bool{}
	add := func(k, v *yaml.Node) {
		if !seen[k.Value] {
			seen[k.Value] = true
			out.Content = append(out.Content, k, v)
		}
	}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if isMergeKey(n.Content[i]) {
			merges = append(merges, n.Content[i+1])
			continue
		}
		add(n.Content[i], n.Content[i+1])
	}
	for _, m := range merges {
		m = deref(m)
		sources := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, s := range sources {
			if s = flatten(deref(s)); s.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(s.Content); i += 2 {
					add(s.Content[i], s.Content[i+1])
				}
			}
		}
	}
	return out
}

// mappingValue is the value of key in the mapping n, alias followed.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return deref(n.Content[i+1])
		}
	}
	return nil
}

// walk calls visit for every value under n with its key path (as Problems
// name it: profiles.x.local_users[0].password) and the line its key is
// written on (a sequence item's own line). Aliases are followed and merge
// keys applied, as decoding does.
func walk(n *yaml.Node, path string, line int, visit func(path string, line int, v *yaml.Node)) {
	v := deref(n)
	if v == nil {
		return
	}
	if v.Kind == yaml.DocumentNode {
		for _, c := range v.Content {
			walk(c, path, c.Line, visit)
		}
		return
	}
	if path != "" {
		visit(path, line, v)
	}
	switch v.Kind {
	case yaml.MappingNode:
		v = flatten(v)
		for i := 0; i+1 < len(v.Content); i += 2 {
			k := v.Content[i]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			walk(v.Content[i+1], p, k.Line, visit)
		}
	case yaml.SequenceNode:
		for i, item := range v.Content {
			walk(item, fmt.Sprintf("%s[%d]", path, i), item.Line, visit)
		}
	}
}

// keyLines maps every key path in the document to the line it is written on.
func keyLines(doc *yaml.Node) map[string]int {
	lines := map[string]int{}
	walk(doc, "", 0, func(path string, line int, _ *yaml.Node) {
		if _, ok := lines[path]; !ok {
			lines[path] = line
		}
	})
	return lines
}

// pathAt is the key path of the value node at line and column.
func pathAt(doc *yaml.Node, line, column int) string {
	var found string
	walk(doc, "", 0, func(path string, _ int, v *yaml.Node) {
		if found == "" && v.Line == line && v.Column == column {
			found = path
		}
	})
	return found
}
