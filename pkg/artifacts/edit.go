package artifacts

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Rewrite is the artifact set file orig, edited in place by what changed
// from the set from (as orig was read) to the set to: only the values that
// changed are written, each where it stands. Comments, the order of keys
// and components, and the style of every value a person wrote stay as
// they were, so that a nightly that updates versions and digests never
// rewrites a hand edit (and a merge of the two does not conflict).
func Rewrite(orig []byte, from, to *Set) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(orig, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return to.Marshal() // an empty file: nothing to keep
	}
	var base, next yaml.Node
	if err := base.Encode(from); err != nil {
		return nil, err
	}
	if err := next.Encode(to); err != nil {
		return nil, err
	}
	if err := edit(doc.Content[0], &base, &next, "set"); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := writeYAML(&b, &doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// edit applies to the node a person wrote (doc) the change from base to
// next, which are the same data as written by the encoder before and after.
func edit(doc, base, next *yaml.Node, where string) error {
	if same(base, next) {
		return nil
	}
	switch {
	case base.Kind != next.Kind || doc.Kind != base.Kind:
		replace(doc, next)
	case next.Kind == yaml.ScalarNode:
		doc.Value, doc.Tag = next.Value, next.Tag
		if doc.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			doc.Style = 0
		}
	case next.Kind == yaml.MappingNode:
		return editMapping(doc, base, next, where)
	case next.Kind == yaml.SequenceNode:
		return editSequence(doc, base, next, where)
	default:
		return fmt.Errorf("%s: cannot edit a YAML node of kind %d", where, next.Kind)
	}
	return nil
}

func editMapping(doc, base, next *yaml.Node, where string) error {
	for i := 0; i+1 < len(next.Content); i += 2 {
		key := next.Content[i].Value
		nv, bv, dv := next.Content[i+1], value(base, key), value(doc, key)
		switch {
		case dv == nil:
			doc.Content = append(doc.Content, next.Content[i], nv)
		case bv == nil:
			replace(dv, nv)
		default:
			if err := edit(dv, bv, nv, where+"."+key); err != nil {
				return err
			}
		}
	}
	// A key the new set no longer has goes; one that only the person
	// wrote (a default the encoder leaves out) stays.
	for i := 0; i+1 < len(base.Content); i += 2 {
		if key := base.Content[i].Value; value(next, key) == nil {
			remove(doc, key)
		}
	}
	return nil
}

// editSequence edits a list: components and steps are matched by their
// name (or role); any other list is written anew when it changed, in the
// style it had.
func editSequence(doc, base, next *yaml.Node, where string) error {
	id := identity(next)
	if id == "" || identity(base) != id && len(base.Content) > 0 {
		replace(doc, next)
		return nil
	}
	var keep []*yaml.Node
	for _, dn := range doc.Content {
		name := scalar(value(dn, id))
		nn, bn := item(next, id, name), item(base, id, name)
		switch {
		case nn == nil && bn != nil:
			continue // removed
		case nn != nil && bn != nil:
			if err := edit(dn, bn, nn, where+"["+name+"]"); err != nil {
				return err
			}
		}
		keep = append(keep, dn)
	}
	for _, nn := range next.Content {
		name := scalar(value(nn, id))
		if item(doc, id, name) == nil {
			keep = append(keep, nn) // added
		}
	}
	doc.Content = keep
	return nil
}

// identity is the key that names the items of a list of mappings: name,
// or role; "" for any other list.
func identity(seq *yaml.Node) string {
	for _, key := range []string{"name", "role"} {
		all := len(seq.Content) > 0
		for _, it := range seq.Content {
			all = all && it.Kind == yaml.MappingNode && value(it, key) != nil
		}
		if all {
			return key
		}
	}
	return ""
}

func item(seq *yaml.Node, id, name string) *yaml.Node {
	for _, it := range seq.Content {
		if scalar(value(it, id)) == name {
			return it
		}
	}
	return nil
}

func value(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func scalar(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

// replace puts next's content in doc's place, keeping doc's comments and
// the flow or block style of a list or mapping.
func replace(doc, next *yaml.Node) {
	head, line, foot, style := doc.HeadComment, doc.LineComment, doc.FootComment, doc.Style
	*doc = *next
	doc.HeadComment, doc.LineComment, doc.FootComment = head, line, foot
	if doc.Kind != yaml.ScalarNode {
		doc.Style = style & yaml.FlowStyle
	}
}

// same reports whether two nodes the encoder wrote hold the same data.
func same(a, b *yaml.Node) bool {
	if a.Kind != b.Kind || a.Value != b.Value || len(a.Content) != len(b.Content) {
		return false
	}
	for i := range a.Content {
		if !same(a.Content[i], b.Content[i]) {
			return false
		}
	}
	return true
}
